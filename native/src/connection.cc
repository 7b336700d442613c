#include "connection.h"

#include <libvirt/virterror.h>

#include <climits>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "addon.h"
#include "values.h"
#include "worker.h"

namespace bca {

namespace {

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
  info.active = virDomainIsActive(d) == 1;
  info.persistent = virDomainIsPersistent(d) == 1;
  virResetLastError();
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

Napi::Value RejectedClosed(Napi::Env env) {
  auto d = Napi::Promise::Deferred::New(env);
  VirError e{VIR_ERR_INVALID_CONN, VIR_FROM_NONE, "the libvirt connection is closed"};
  d.Reject(e.ToJs(env).Value());
  return d.Promise();
}

struct BlockJobInfoResult {
  bool present = false;
  int type = 0;
  uint64_t bandwidth = 0;
  bool bandwidthInMiB = false;
  uint64_t cur = 0;
  uint64_t end = 0;
};

}  // namespace

Napi::Function Connection::Define(Napi::Env env) {
  return DefineClass(env, "Connection", {
      InstanceMethod<&Connection::Close>("close"),
      InstanceMethod<&Connection::IsClosed>("isClosed"),
      InstanceMethod<&Connection::LookupDomain>("lookupDomain"),
      InstanceMethod<&Connection::ListDomains>("listDomains"),
      InstanceMethod<&Connection::GetXml>("getXml"),
      InstanceMethod<&Connection::GetMetadata>("getMetadata"),
      InstanceMethod<&Connection::SetMetadata>("setMetadata"),
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
  // Only Open() constructs connections, passing the opened pointer as an External.
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsBoolean()) {
    throw Napi::TypeError::New(info.Env(), "use open() to create a connection");
  }
  conn_ = info[0].As<Napi::External<virConnect>>().Data();
  hasCloseCallback_ = info[1].As<Napi::Boolean>().Value();
}

Connection::~Connection() {
  // Reached only when JS dropped an unclosed connection. During environment teardown the
  // thread-safe functions are already gone, so leave the socket to the OS.
  if (conn_ != nullptr && !AddonData::ShuttingDown()) CloseNow();
}

void Connection::CloseNow() {
  for (auto& [id, sub] : subscriptions_) DeregisterDomainEvents(conn_, sub);
  subscriptions_.clear();
  if (hasCloseCallback_) UnregisterCloseCallback(conn_);
  virConnectClose(conn_);
  conn_ = nullptr;
}

ConnPtr Connection::Ref(Napi::Env env) {
  virConnectRef(conn_);
  return ConnPtr(conn_, [](virConnectPtr c) { virConnectClose(c); });
}

Napi::Value Connection::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string uri = StringArg(info, 0, "uri");
  Napi::Object opts = OptionsArg(info, 1);
  uint64_t interval = U64Option(opts, "keepaliveInterval", 5);
  uint64_t count = U64Option(opts, "keepaliveCount", 3);
  if (interval > INT_MAX || count > UINT_MAX) throw Napi::TypeError::New(env, "keepalive values out of range");
  bool withClose = info.Length() > 2 && !info[2].IsUndefined();
  if (withClose && !info[2].IsFunction()) throw Napi::TypeError::New(env, "onClose must be a function");

  auto closeFn = std::make_shared<std::optional<Napi::ThreadSafeFunction>>();
  auto closeRegistered = std::make_shared<bool>(false);
  if (withClose) closeFn->emplace(NewCloseFunction(env, info[2].As<Napi::Function>()));

  return PromiseWorker<virConnectPtr>::Start(
      env,
      [uri, interval, count, closeFn, closeRegistered]() {
        virConnectPtr c = virConnectOpen(uri.c_str());
        if (c == nullptr) ThrowLastError("cannot open the libvirt connection");
        // Keepalive is best effort: drivers without it (test://) still give a usable connection.
        if (interval > 0 && virConnectSetKeepAlive(c, static_cast<int>(interval), static_cast<unsigned>(count)) < 0) {
          virResetLastError();
        }
        if (closeFn->has_value()) {
          try {
            RegisterCloseCallback(c, **closeFn);
          } catch (...) {
            *closeRegistered = true;  // RegisterCloseCallback released it
            virConnectClose(c);
            throw;
          }
          *closeRegistered = true;
        }
        return c;
      },
      [withClose](Napi::Env env, virConnectPtr& c) -> Napi::Value {
        return AddonData::Get(env)->connectionCtor.New(
            {Napi::External<virConnect>::New(env, c), Napi::Boolean::New(env, withClose)});
      },
      [closeFn, closeRegistered]() {
        if (closeFn->has_value() && !*closeRegistered) (*closeFn)->Release();
      });
}

Napi::Value Connection::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (conn_ == nullptr) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  // Hand our own reference to the worker: calls still in flight keep theirs.
  std::vector<EventSubscription> subs;
  for (auto& [id, sub] : subscriptions_) subs.push_back(sub);
  subscriptions_.clear();
  bool hadClose = hasCloseCallback_;
  virConnectPtr c = conn_;
  conn_ = nullptr;
  return PromiseWorker<Done>::Start(
      env,
      [c, subs, hadClose]() {
        for (const auto& s : subs) DeregisterDomainEvents(c, s);
        if (hadClose) UnregisterCloseCallback(c);
        if (virConnectClose(c) < 0) virResetLastError();
        return Done{};
      },
      Undefined);
}

Napi::Value Connection::IsClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), conn_ == nullptr);
}

Napi::Value Connection::LookupDomain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<DomainInfo>::Start(
      env, [c, key]() { Dom d(c.get(), key); return InfoOf(d); },
      [](Napi::Env env, DomainInfo& i) -> Napi::Value { return DomainInfoToJs(env, i); });
}

Napi::Value Connection::ListDomains(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object opts = OptionsArg(info, 0);
  unsigned int flags = BoolOption(opts, "activeOnly") ? VIR_CONNECT_LIST_DOMAINS_ACTIVE : 0;
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<std::vector<DomainInfo>>::Start(
      env,
      [c, flags]() {
        virDomainPtr* doms = nullptr;
        int n = virConnectListAllDomains(c.get(), &doms, flags);
        if (n < 0) ThrowLastError("cannot list domains");
        std::vector<DomainInfo> out;
        for (int i = 0; i < n; i++) {
          out.push_back(InfoOf(doms[i]));
          virDomainFree(doms[i]);
        }
        free(doms);
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
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<std::string>::Start(
      env,
      [c, key, flags]() {
        Dom d(c.get(), key);
        char* xml = virDomainGetXMLDesc(d, flags);
        if (xml == nullptr) ThrowLastError("cannot read the domain XML");
        std::string s(xml);
        free(xml);
        return s;
      },
      [](Napi::Env env, std::string& s) -> Napi::Value { return Napi::String::New(env, s); });
}

Napi::Value Connection::GetMetadata(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string uri = StringArg(info, 1, "namespaceUri");
  Napi::Object opts = OptionsArg(info, 2);
  unsigned int flags = BoolOption(opts, "config") ? VIR_DOMAIN_AFFECT_CONFIG : VIR_DOMAIN_AFFECT_LIVE;
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<std::optional<std::string>>::Start(
      env,
      [c, key, uri, flags]() -> std::optional<std::string> {
        Dom d(c.get(), key);
        char* xml = virDomainGetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, uri.c_str(), flags);
        if (xml == nullptr) {
          virErrorPtr e = virGetLastError();
          if (e != nullptr && e->code == VIR_ERR_NO_DOMAIN_METADATA) {
            virResetLastError();
            return std::nullopt;
          }
          ThrowLastError("cannot read domain metadata");
        }
        std::string s(xml);
        free(xml);
        return s;
      },
      [](Napi::Env env, std::optional<std::string>& s) -> Napi::Value {
        return s ? Napi::Value(Napi::String::New(env, *s)) : env.Null();
      });
}

Napi::Value Connection::SetMetadata(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string uri = StringArg(info, 1, "namespaceUri");
  std::string elementKey = StringArg(info, 2, "key");
  std::optional<std::string> xml;
  if (info.Length() > 3 && !info[3].IsNull()) xml = StringArg(info, 3, "xml");
  Napi::Object opts = OptionsArg(info, 4);
  unsigned int flags = BoolOption(opts, "config") ? VIR_DOMAIN_AFFECT_CONFIG : VIR_DOMAIN_AFFECT_LIVE;
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<Done>::Start(
      env,
      [c, key, uri, elementKey, xml, flags]() {
        Dom d(c.get(), key);
        // With a NULL body libvirt removes the element; key and uri are then ignored.
        if (virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, xml ? xml->c_str() : nullptr,
                                 xml ? elementKey.c_str() : nullptr, uri.c_str(), flags) < 0) {
          ThrowLastError("cannot set domain metadata");
        }
        return Done{};
      },
      Undefined);
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
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<Done>::Start(
      env,
      [c, key, disk, destXml, flags, bandwidth, bufSize, granularity]() {
        Dom d(c.get(), key);
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
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<BlockJobInfoResult>::Start(
      env,
      [c, key, disk]() {
        Dom d(c.get(), key);
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
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<Done>::Start(
      env,
      [c, key, disk, flags]() {
        Dom d(c.get(), key);
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
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<Done>::Start(
      env,
      [c, key, disk, bw]() {
        Dom d(c.get(), key);
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
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  return PromiseWorker<int>::Start(
      env,
      [c, key, fn, what]() {
        Dom d(c.get(), key);
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
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  struct V {
    std::string lib, type, hv;
  };
  return PromiseWorker<V>::Start(
      env,
      [c]() {
        V v;
        unsigned long lib = 0, hv = 0;
        if (virConnectGetLibVersion(c.get(), &lib) < 0) ThrowLastError("cannot read the libvirt version");
        const char* type = virConnectGetType(c.get());
        if (type == nullptr) ThrowLastError("cannot read the hypervisor type");
        if (virConnectGetVersion(c.get(), &hv) < 0) ThrowLastError("cannot read the hypervisor version");
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
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "listener must be a function");
  if (conn_ == nullptr) return RejectedClosed(env);
  ConnPtr c = Ref(env);
  Napi::ThreadSafeFunction tsfn = NewEventFunction(env, info[0].As<Napi::Function>());
  auto self = std::make_shared<Napi::ObjectReference>(Napi::Persistent(Value()));
  return PromiseWorker<EventSubscription>::Start(
      env, [c, tsfn]() { return RegisterDomainEvents(c.get(), tsfn); },
      [c, self](Napi::Env env, EventSubscription& sub) -> Napi::Value {
        Connection* me = Connection::Unwrap(self->Value());
        if (me->conn_ == nullptr) {
          // Closed while registering: undo at once rather than leak the registration.
          DeregisterDomainEvents(c.get(), sub);
          throw VirError{VIR_ERR_INVALID_CONN, VIR_FROM_NONE, "the libvirt connection is closed"}.ToJs(env);
        }
        int id = me->nextSubscription_++;
        me->subscriptions_[id] = sub;
        return Napi::Number::New(env, id);
      },
      [tsfn]() mutable { tsfn.Release(); });
}

Napi::Value Connection::UnsubscribeEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "subscription id must be a number");
  int id = info[0].As<Napi::Number>().Int32Value();
  auto it = subscriptions_.find(id);
  if (conn_ == nullptr || it == subscriptions_.end()) {
    // Unknown or already gone (closing the connection drops every subscription): nothing to do.
    auto d = Napi::Promise::Deferred::New(env);
    d.Resolve(env.Undefined());
    return d.Promise();
  }
  EventSubscription sub = it->second;
  subscriptions_.erase(it);
  ConnPtr c = Ref(env);
  return PromiseWorker<Done>::Start(
      env, [c, sub]() { DeregisterDomainEvents(c.get(), sub); return Done{}; }, Undefined);
}

}  // namespace bca
