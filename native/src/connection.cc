#include "connection.h"

#include <libvirt/virterror.h>

#include <atomic>
#include <climits>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "addon.h"
#include "values.h"

namespace bca {

namespace {

// Marks the External that only open() creates, so the constructor refuses any other.
const napi_type_tag kPartsTag = {0x6b1f0c2a9d4e4b17ULL, 0xa3c5e8f1720d9b64ULL};

struct DomainInfo {
  std::string name;
  std::string uuid;
  int id = -1;
  bool active = false;
  bool persistent = false;
};

// Owns one virDomainPtr for the duration of a call.
class Dom {
 public:
  Dom(virConnectPtr c, const std::string& key) : p_(Lookup(c, key)) {}
  ~Dom() { virDomainFree(p_); }
  Dom(const Dom&) = delete;
  Dom& operator=(const Dom&) = delete;
  operator virDomainPtr() const { return p_; }

 private:
  static bool LooksLikeUuid(const std::string& s) {
    if (s.size() != 36 && s.size() != 32) return false;
    for (char ch : s) {
      if (!(isxdigit(static_cast<unsigned char>(ch)) || ch == '-')) return false;
    }
    return true;
  }
  static virDomainPtr Lookup(virConnectPtr c, const std::string& key) {
    // Like virsh: a UUID-shaped key is tried as a UUID first, then as a name.
    if (LooksLikeUuid(key)) {
      virDomainPtr d = virDomainLookupByUUIDString(c, key.c_str());
      if (d != nullptr) return d;
      virResetLastError();
    }
    virDomainPtr d = virDomainLookupByName(c, key.c_str());
    if (d == nullptr) ThrowLastError("domain not found");
    return d;
  }
  virDomainPtr p_;
};

DomainInfo InfoOf(virDomainPtr d) {
  DomainInfo info;
  const char* name = virDomainGetName(d);
  if (name != nullptr) info.name = name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(d, uuid) == 0) info.uuid = uuid;
  unsigned int id = virDomainGetID(d);
  info.id = id == static_cast<unsigned int>(-1) ? -1 : static_cast<int>(id);
  virResetLastError();  // a stopped domain has no id: not an error
  // A failure to read the state (connection lost, domain gone) is an error, not "inactive".
  int active = virDomainIsActive(d);
  if (active < 0) ThrowLastError("cannot read the domain state");
  int persistent = virDomainIsPersistent(d);
  if (persistent < 0) ThrowLastError("cannot read whether the domain is persistent");
  info.active = active == 1;
  info.persistent = persistent == 1;
  return info;
}

Napi::Object DomainInfoToJs(Napi::Env env, const DomainInfo& i) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", i.name);
  o.Set("uuid", i.uuid);
  o.Set("id", i.id);
  o.Set("active", i.active);
  o.Set("persistent", i.persistent);
  return o;
}

std::string VersionString(unsigned long v) {
  return std::to_string(v / 1000000) + "." + std::to_string((v / 1000) % 1000) + "." + std::to_string(v % 1000);
}

Napi::Value Undefined(Napi::Env env, Done&) { return env.Undefined(); }

Napi::Value Rejected(Napi::Env env, const VirError& e) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Reject(e.ToJs(env).Value());
  return d.Promise();
}

Napi::Value Resolved(Napi::Env env) {
  auto d = Napi::Promise::Deferred::New(env);
  d.Resolve(env.Undefined());
  return d.Promise();
}

const VirError kClosed{VIR_ERR_INVALID_CONN, VIR_FROM_NONE, "the libvirt connection is closed", "closed"};

VirError BusyError(size_t pending) {
  return VirError{VIR_ERR_OPERATION_TIMEOUT, VIR_FROM_NONE,
                  "too many libvirt calls are waiting for libvirtd (" + std::to_string(pending) +
                      "); the call was not sent",
                  "busy"};
}

// The close of a connection dropped without close(): nobody waits for it.
class Closer : public Task {
 public:
  explicit Closer(std::shared_ptr<Registrations> regs) : regs_(std::move(regs)) {}
  void Run(virConnectPtr c) override {
    if (c != nullptr) regs_->Clear(c);
    regs_.reset();
  }
  void Fail(VirError) override { regs_.reset(); }
  void Deliver(Napi::Env) override {}

 private:
  std::shared_ptr<Registrations> regs_;
};

struct BlockJobInfoResult {
  bool present = false;
  int type = 0;
  uint64_t bandwidth = 0;
  bool bandwidthInMiB = false;
  uint64_t cur = 0;
  uint64_t end = 0;
};

uint32_t U32Option(Napi::Env env, const Napi::Object& opts, const char* name, uint64_t fallback, uint64_t min, uint64_t max) {
  uint64_t v = U64Option(opts, name, fallback);
  if (v < min || v > max) {
    throw Napi::RangeError::New(env, std::string(name) + " must be between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return static_cast<uint32_t>(v);
}

}  // namespace

Napi::Function Connection::Define(Napi::Env env) {
  return DefineClass(env, "Connection", {
      InstanceMethod<&Connection::Close>("close"),
      InstanceMethod<&Connection::IsClosed>("isClosed"),
      InstanceMethod<&Connection::SetHandlers>("setHandlers"),
      InstanceMethod<&Connection::PendingCalls>("pendingCalls"),
      InstanceMethod<&Connection::LookupDomain>("lookupDomain"),
      InstanceMethod<&Connection::ListDomains>("listDomains"),
      InstanceMethod<&Connection::GetXml>("getXml"),
      InstanceMethod<&Connection::BlockCopy>("blockCopy"),
      InstanceMethod<&Connection::GetBlockJobInfo>("getBlockJobInfo"),
      InstanceMethod<&Connection::BlockJobAbort>("blockJobAbort"),
      InstanceMethod<&Connection::BlockJobSetSpeed>("blockJobSetSpeed"),
      InstanceMethod<&Connection::Versions>("versions"),
      InstanceMethod<&Connection::Suspend>("suspend"),
      InstanceMethod<&Connection::Resume>("resume"),
      InstanceMethod<&Connection::FsFreeze>("fsFreeze"),
      InstanceMethod<&Connection::FsThaw>("fsThaw"),
      InstanceMethod<&Connection::SubscribeEvents>("subscribeEvents"),
      InstanceMethod<&Connection::UnsubscribeEvents>("unsubscribeEvents"),
  });
}

Connection::Connection(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Connection>(info) {
  Napi::Env env = info.Env();
  bool tagged = false;
  if (info.Length() >= 1 && info[0].IsExternal()) {
    napi_check_object_type_tag(env, info[0], &kPartsTag, &tagged);
  }
  Parts* parts = tagged ? info[0].As<Napi::External<Parts>>().Data() : nullptr;
  if (parts == nullptr || parts->taken) throw Napi::TypeError::New(env, "use open() to create a connection");
  parts->taken = true;
  p_ = *parts;
  napi_create_reference(env, Value(), 0, &p_.js->self);
}

Connection::~Connection() {
  // Finalized: JS dropped the object (or the environment is going away).
  p_.js->gone = true;
  if (p_.js->self != nullptr) {
    napi_delete_reference(Env(), p_.js->self);
    p_.js->self = nullptr;
  }
  if (!closed_) {
    // Never closed: close it on its own thread; the JS thread never waits on libvirt.
    std::unique_ptr<Task> closer = std::make_unique<Closer>(p_.regs);
    p_.worker->BeginClose(closer);
  }
}

template <typename R>
Napi::Value Connection::Submit(Napi::Env env, typename Call<R>::Work work, typename Call<R>::Convert convert) {
  if (closed_) return Rejected(env, kClosed);
  Napi::Value promise;
  std::unique_ptr<Task> call = std::make_unique<Call<R>>(env, std::move(work), std::move(convert), &promise);
  call->deadline = Clock::now() + std::chrono::milliseconds(p_.timeoutMs);
  switch (p_.worker->Submit(call)) {
    case Worker::Admit::Ok: return promise;
    case Worker::Admit::Busy: call->Fail(BusyError(p_.worker->Pending())); break;
    case Worker::Admit::Closed: call->Fail(kClosed); break;
  }
  call->Deliver(env);
  return promise;
}

Napi::Value Connection::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string uri = StringArg(info, 0, "uri");
  Napi::Object opts = OptionsArg(info, 1);
  uint32_t interval = U32Option(env, opts, "keepaliveInterval", 5, 0, INT_MAX);
  uint32_t count = U32Option(env, opts, "keepaliveCount", 3, 0, UINT_MAX);
  uint32_t timeoutMs = U32Option(env, opts, "callTimeoutMs", 30000, 1, 3600000);
  uint32_t maxPending = U32Option(env, opts, "maxPendingCalls", 64, 1, 100000);
  // One call thread per connection: libvirt 9.0's remote client crashes (SIGSEGV in its I/O loop)
  // when keepalive drops a connection that two threads are waiting on and the daemon then answers.
  const uint32_t threads = 1;

  auto envState = EnvState::Of(env);
  // An open to a hung libvirtd blocks its thread until libvirtd answers: bound how many may.
  if (!envState->BeginOpen()) {
    return Rejected(env, VirError{VIR_ERR_OPERATION_TIMEOUT, VIR_FROM_NONE,
                                  "too many libvirt connections are still opening; libvirtd does not answer", "busy"});
  }
  std::shared_ptr<Sink> sink;
  try {
    sink = Sink::New(env, "libvirt-connection");
  } catch (...) {
    envState->EndOpen();
    throw;
  }
  auto parts = std::make_shared<Parts>();
  parts->js = std::make_shared<JsSide>();
  parts->regs = std::make_shared<Registrations>(std::make_shared<Link>(Link{sink, parts->js}));
  parts->worker = std::make_shared<Worker>(sink, threads, maxPending);
  parts->envState = envState;
  parts->timeoutMs = timeoutMs;
  std::weak_ptr<Worker> weakWorker = parts->worker;
  std::shared_ptr<Registrations> regs = parts->regs;

  Napi::Value promise;
  std::unique_ptr<Task> call = std::make_unique<Call<bool>>(
      env,
      [uri, interval, count, weakWorker, regs, envState](virConnectPtr) {
        struct Opening {
          std::shared_ptr<EnvState> s;
          ~Opening() { s->EndOpen(); }
        } opening{envState};
        auto worker = weakWorker.lock();
        virConnectPtr c = virConnectOpen(uri.c_str());
        if (c == nullptr) {
          VirError e = VirError::Capture("cannot open the libvirt connection");
          std::unique_ptr<Task> none;
          if (worker) worker->BeginClose(none);
          throw VirFailure{e};
        }
        // Keepalive is best effort: drivers without it (test://) still give a usable connection.
        if (interval > 0 && virConnectSetKeepAlive(c, static_cast<int>(interval), count) < 0) virResetLastError();
        regs->WatchClose(c);
        if (worker) worker->SetConnection(c);  // the Worker owns this reference from now on
        return true;
      },
      [parts](Napi::Env env, bool&) -> Napi::Value {
        try {
          auto* held = new Parts(*parts);
          auto ext = Napi::External<Parts>::New(env, held, [](Napi::Env, Parts* p) { delete p; });
          napi_type_tag_object(env, ext, &kPartsTag);
          return AddonData::Get(env)->connectionCtor.New({ext});
        } catch (...) {
          // No object, so no finalizer will close it: close it here (on its own thread).
          std::unique_ptr<Task> closer = std::make_unique<Closer>(parts->regs);
          parts->worker->BeginClose(closer);
          throw;
        }
      },
      &promise);
  call->deadline = Clock::time_point::max();
  {
    // The environment ended before the open was delivered: close what nobody will see.
    std::weak_ptr<Worker> w = parts->worker;
    std::shared_ptr<Registrations> r = parts->regs;
    static_cast<Call<bool>*>(call.get())->OnUndelivered([w, r] {
      if (auto worker = w.lock()) {
        std::unique_ptr<Task> closer = std::make_unique<Closer>(r);
        worker->BeginClose(closer);
      }
    });
  }
  if (parts->worker->Submit(call) != Worker::Admit::Ok) {
    envState->EndOpen();
    call->Fail(kClosed);
    call->Deliver(env);
  }
  return promise;
}

Napi::Value Connection::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return Resolved(env);
  closed_ = true;
  // No close notification after the caller closed it; events stop keeping the process alive.
  p_.js->userClosed = true;
  if (p_.js->eventsRef) {
    p_.worker->sink()->Unref(env);
    p_.js->eventsRef = false;
  }
  Napi::Value promise;
  std::shared_ptr<Registrations> regs = p_.regs;
  std::unique_ptr<Task> closer = std::make_unique<Call<Done>>(
      env, [regs](virConnectPtr c) { if (c != nullptr) regs->Clear(c); return Done{}; }, Undefined, &promise);
  if (!p_.worker->BeginClose(closer)) return Resolved(env);
  return promise;
}

Napi::Value Connection::IsClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), closed_);
}

// setHandlers(onEvent, onClose): installs the callbacks (as properties of this object, so they
// keep nothing alive beyond it) and replays a close that arrived before them.
Napi::Value Connection::SetHandlers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsFunction() || !info[1].IsFunction()) {
    throw Napi::TypeError::New(env, "setHandlers(onEvent, onClose) takes two functions");
  }
  Value().Set("onevent", info[0]);
  Value().Set("onclose", info[1]);
  if (p_.js->pendingClose >= 0) p_.js->DeliverClose(env, p_.js->pendingClose);
  return env.Undefined();
}

Napi::Value Connection::PendingCalls(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(p_.worker->Pending()));
}

Napi::Value Connection::LookupDomain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  return Submit<DomainInfo>(
      env, [key](virConnectPtr c) { Dom d(c, key); return InfoOf(d); },
      [](Napi::Env env, DomainInfo& i) -> Napi::Value { return DomainInfoToJs(env, i); });
}

Napi::Value Connection::ListDomains(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object opts = OptionsArg(info, 0);
  unsigned int flags = BoolOption(opts, "activeOnly") ? VIR_CONNECT_LIST_DOMAINS_ACTIVE : 0;
  return Submit<std::vector<DomainInfo>>(
      env, [flags](virConnectPtr c) {
        virDomainPtr* doms = nullptr;
        int n = virConnectListAllDomains(c, &doms, flags);
        if (n < 0) ThrowLastError("cannot list domains");
        std::vector<DomainInfo> out;
        std::optional<VirFailure> failed;
        for (int i = 0; i < n; i++) {
          // A domain undefined while listing is not an error: it is simply no longer there.
          if (!failed) {
            try {
              out.push_back(InfoOf(doms[i]));
            } catch (const VirFailure& f) {
              if (f.error.code != VIR_ERR_NO_DOMAIN) failed = f;
            }
          }
          virDomainFree(doms[i]);
        }
        free(doms);
        if (failed) throw *failed;
        return out;
      },
      [](Napi::Env env, std::vector<DomainInfo>& list) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, list.size());
        for (size_t i = 0; i < list.size(); i++) a.Set(static_cast<uint32_t>(i), DomainInfoToJs(env, list[i]));
        return a;
      });
}

Napi::Value Connection::GetXml(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  Napi::Object opts = OptionsArg(info, 1);
  unsigned int flags = BoolOption(opts, "inactive") ? VIR_DOMAIN_XML_INACTIVE : 0;
  return Submit<std::string>(
      env, [key, flags](virConnectPtr c) {
        Dom d(c, key);
        char* xml = virDomainGetXMLDesc(d, flags);
        if (xml == nullptr) ThrowLastError("cannot read the domain XML");
        std::string s(xml);
        free(xml);
        return s;
      },
      [](Napi::Env env, std::string& s) -> Napi::Value { return Napi::String::New(env, s); });
}

Napi::Value Connection::BlockCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  std::string destXml = StringArg(info, 2, "destinationXml");
  Napi::Object opts = OptionsArg(info, 3);
  unsigned int flags = 0;
  if (BoolOption(opts, "shallow")) flags |= VIR_DOMAIN_BLOCK_COPY_SHALLOW;
  if (BoolOption(opts, "reuseExternal")) flags |= VIR_DOMAIN_BLOCK_COPY_REUSE_EXT;
  if (BoolOption(opts, "transientJob")) flags |= VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB;
  if (BoolOption(opts, "synchronousWrites")) flags |= VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES;
  std::optional<uint64_t> bandwidth, bufSize;
  std::optional<unsigned int> granularity;
  if (!opts.Get("bandwidth").IsUndefined()) bandwidth = U64Option(opts, "bandwidth", 0);
  if (!opts.Get("bufSize").IsUndefined()) bufSize = U64Option(opts, "bufSize", 0);
  if (!opts.Get("granularity").IsUndefined()) {
    uint64_t g = U64Option(opts, "granularity", 0);
    if (g > UINT_MAX) throw Napi::TypeError::New(env, "granularity must fit an unsigned 32-bit integer");
    granularity = static_cast<unsigned int>(g);
  }
  return Submit<Done>(
      env, [key, disk, destXml, flags, bandwidth, bufSize, granularity](virConnectPtr c) {
        Dom d(c, key);
        virTypedParameterPtr params = nullptr;
        int n = 0, max = 0;
        bool ok = true;
        if (bandwidth) ok = ok && virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_BLOCK_COPY_BANDWIDTH, *bandwidth) == 0;
        if (granularity) ok = ok && virTypedParamsAddUInt(&params, &n, &max, VIR_DOMAIN_BLOCK_COPY_GRANULARITY, *granularity) == 0;
        if (bufSize) ok = ok && virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_BLOCK_COPY_BUF_SIZE, *bufSize) == 0;
        int rc = ok ? virDomainBlockCopy(d, disk.c_str(), destXml.c_str(), params, n, flags) : -1;
        if (rc < 0) {
          VirError e = VirError::Capture("block copy failed");
          virTypedParamsFree(params, n);
          throw VirFailure{e};
        }
        virTypedParamsFree(params, n);
        return Done{};
      },
      Undefined);
}

Napi::Value Connection::GetBlockJobInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  return Submit<BlockJobInfoResult>(
      env, [key, disk](virConnectPtr c) {
        Dom d(c, key);
        virDomainBlockJobInfo raw{};
        BlockJobInfoResult r;
        int rc = virDomainGetBlockJobInfo(d, disk.c_str(), &raw, VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES);
        if (rc < 0) {
          // Bytes do not fit an unsigned long (32-bit hosts) or the flag is unknown: ask in MiB/s.
          virErrorPtr e = virGetLastError();
          if (e == nullptr || (e->code != VIR_ERR_OVERFLOW && e->code != VIR_ERR_INVALID_ARG)) {
            ThrowLastError("cannot read block job info");
          }
          virResetLastError();
          rc = virDomainGetBlockJobInfo(d, disk.c_str(), &raw, 0);
          if (rc < 0) ThrowLastError("cannot read block job info");
          r.bandwidthInMiB = true;
        }
        if (rc == 0) return r;
        r.present = true;
        r.type = raw.type;
        r.bandwidth = r.bandwidthInMiB ? static_cast<uint64_t>(raw.bandwidth) * 1024 * 1024 : raw.bandwidth;
        r.cur = raw.cur;
        r.end = raw.end;
        return r;
      },
      [](Napi::Env env, BlockJobInfoResult& r) -> Napi::Value {
        if (!r.present) return env.Null();
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", BlockJobTypeName(r.type));
        o.Set("bandwidth", BigIntFromU64(env, r.bandwidth));
        o.Set("bandwidthSource", r.bandwidthInMiB ? "MiB" : "bytes");
        o.Set("cur", BigIntFromU64(env, r.cur));
        o.Set("end", BigIntFromU64(env, r.end));
        return o;
      });
}

Napi::Value Connection::BlockJobAbort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  Napi::Object opts = OptionsArg(info, 2);
  unsigned int flags = 0;
  if (BoolOption(opts, "async")) flags |= VIR_DOMAIN_BLOCK_JOB_ABORT_ASYNC;
  if (BoolOption(opts, "pivot")) flags |= VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT;
  return Submit<Done>(
      env, [key, disk, flags](virConnectPtr c) {
        Dom d(c, key);
        if (virDomainBlockJobAbort(d, disk.c_str(), flags) < 0) ThrowLastError("block job abort failed");
        return Done{};
      },
      Undefined);
}

Napi::Value Connection::BlockJobSetSpeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  if (info.Length() < 3) throw Napi::TypeError::New(env, "bandwidth is required");
  uint64_t bw = U64Value(env, info[2], "bandwidth");
  if (bw > ULONG_MAX) throw Napi::TypeError::New(env, "bandwidth does not fit an unsigned long");
  return Submit<Done>(
      env, [key, disk, bw](virConnectPtr c) {
        Dom d(c, key);
        if (virDomainBlockJobSetSpeed(d, disk.c_str(), static_cast<unsigned long>(bw),
                                      VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES) < 0) {
          ThrowLastError("cannot set the block job speed");
        }
        return Done{};
      },
      Undefined);
}

// suspend/resume/fsFreeze/fsThaw: one call on one domain, resolving to libvirt's non-negative
// result (for fsFreeze/fsThaw, how many filesystems the guest agent froze or thawed).
Napi::Value Connection::DomainCall(const Napi::CallbackInfo& info, int (*fn)(virDomainPtr),
                                   const char* what) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  return Submit<int>(
      env, [key, fn, what](virConnectPtr c) {
        Dom d(c, key);
        int r = fn(d);
        if (r < 0) ThrowLastError(what);
        return r;
      },
      [](Napi::Env env, int& r) -> Napi::Value { return Napi::Number::New(env, r); });
}

Napi::Value Connection::Suspend(const Napi::CallbackInfo& info) {
  return DomainCall(info, [](virDomainPtr d) { return virDomainSuspend(d); }, "cannot suspend the domain");
}

Napi::Value Connection::Resume(const Napi::CallbackInfo& info) {
  return DomainCall(info, [](virDomainPtr d) { return virDomainResume(d); }, "cannot resume the domain");
}

Napi::Value Connection::FsFreeze(const Napi::CallbackInfo& info) {
  return DomainCall(info, [](virDomainPtr d) { return virDomainFSFreeze(d, nullptr, 0, 0); },
                    "cannot freeze the guest's filesystems");
}

Napi::Value Connection::FsThaw(const Napi::CallbackInfo& info) {
  return DomainCall(info, [](virDomainPtr d) { return virDomainFSThaw(d, nullptr, 0, 0); },
                    "cannot thaw the guest's filesystems");
}

Napi::Value Connection::Versions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct V {
    std::string lib, type, hv;
  };
  return Submit<V>(
      env, [](virConnectPtr c) {
        V v;
        unsigned long lib = 0, hv = 0;
        if (virConnectGetLibVersion(c, &lib) < 0) ThrowLastError("cannot read the libvirt version");
        const char* type = virConnectGetType(c);
        if (type == nullptr) ThrowLastError("cannot read the hypervisor type");
        if (virConnectGetVersion(c, &hv) < 0) ThrowLastError("cannot read the hypervisor version");
        v.lib = VersionString(lib);
        v.type = type;
        v.hv = VersionString(hv);
        return v;
      },
      [](Napi::Env env, V& v) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("libvirt", v.lib);
        o.Set("hypervisorType", v.type);
        o.Set("hypervisor", v.hv);
        return o;
      });
}

Napi::Value Connection::SubscribeEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Registrations> regs = p_.regs;
  std::shared_ptr<JsSide> js = p_.js;
  std::shared_ptr<Sink> sink = p_.worker->sink();
  return Submit<Done>(
      env, [regs](virConnectPtr c) { regs->Subscribe(c); return Done{}; },
      [js, sink](Napi::Env env, Done&) -> Napi::Value {
        // While subscribed, the connection keeps the process alive (events may still come).
        if (!js->userClosed && !js->eventsRef) {
          sink->Ref(env);
          js->eventsRef = true;
        }
        return env.Undefined();
      });
}

Napi::Value Connection::UnsubscribeEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return Resolved(env);  // closing dropped every registration
  std::shared_ptr<Registrations> regs = p_.regs;
  std::shared_ptr<JsSide> js = p_.js;
  std::shared_ptr<Sink> sink = p_.worker->sink();
  return Submit<Done>(
      env, [regs](virConnectPtr c) { regs->Unsubscribe(c); return Done{}; },
      [js, sink](Napi::Env env, Done&) -> Napi::Value {
        if (js->eventsRef) {
          sink->Unref(env);
          js->eventsRef = false;
        }
        return env.Undefined();
      });
}

}  // namespace bca
