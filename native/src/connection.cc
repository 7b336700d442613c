#include "connection.h"

#include <libvirt/virterror.h>

#include <climits>
#include <string>

#include "addon.h"
#include "values.h"

namespace bca {

namespace {

// Marks the External that only open() creates, so the constructor refuses any other.
const napi_type_tag kPartsTag = {0x6b1f0c2a9d4e4b17ULL, 0xa3c5e8f1720d9b64ULL};

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
      InstanceMethod<&Connection::CallState>("callState"),
      InstanceMethod<&Connection::CancelQueued>("cancelQueued"),
      InstanceMethod<&Connection::LookupDomain>("lookupDomain"),
      InstanceMethod<&Connection::ListDomains>("listDomains"),
      InstanceMethod<&Connection::GetXml>("getXml"),
      InstanceMethod<&Connection::StorageVolPath>("storageVolPath"),
      InstanceMethod<&Connection::StoragePoolXml>("storagePoolXml"),
      InstanceMethod<&Connection::StoragePoolRefresh>("storagePoolRefresh"),
      InstanceMethod<&Connection::BlockCopy>("blockCopy"),
      InstanceMethod<&Connection::SnapshotCreateXml>("snapshotCreateXml"),
      InstanceMethod<&Connection::BlockCommit>("blockCommit"),
      InstanceMethod<&Connection::BlockPull>("blockPull"),
      InstanceMethod<&Connection::BackupBegin>("backupBegin"),
      InstanceMethod<&Connection::BackupGetXmlDesc>("backupGetXmlDesc"),
      InstanceMethod<&Connection::AbortJob>("abortJob"),
      InstanceMethod<&Connection::GetJobStats>("getJobStats"),
      InstanceMethod<&Connection::ListCheckpoints>("listCheckpoints"),
      InstanceMethod<&Connection::CheckpointDelete>("checkpointDelete"),
      InstanceMethod<&Connection::GetBlockJobInfo>("getBlockJobInfo"),
      InstanceMethod<&Connection::GetBlockInfo>("getBlockInfo"),
      InstanceMethod<&Connection::BlockJobAbort>("blockJobAbort"),
      InstanceMethod<&Connection::BlockJobSetSpeed>("blockJobSetSpeed"),
      InstanceMethod<&Connection::Versions>("versions"),
      InstanceMethod<&Connection::Suspend>("suspend"),
      InstanceMethod<&Connection::Resume>("resume"),
      InstanceMethod<&Connection::FsFreeze>("fsFreeze"),
      InstanceMethod<&Connection::FsThaw>("fsThaw"),
      InstanceMethod<&Connection::GetState>("getState"),
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

Napi::Value Connection::RejectClosed(Napi::Env env) { return Rejected(env, kClosed); }

Napi::Value Connection::Enqueue(Napi::Env env, std::unique_ptr<Task> call, Napi::Value promise) {
  call->queuedAt = Clock::now();
  call->deadline = call->queuedAt + std::chrono::milliseconds(p_.queueTimeoutMs);
  call->id = p_.worker->NewId();
  // The facade reads the call's state by this id (callState, cancelQueued).
  promise.As<Napi::Object>().Set("callId", Napi::Number::New(env, static_cast<double>(call->id)));
  switch (p_.worker->Submit(call)) {
    case Worker::Admit::Ok: return promise;
    case Worker::Admit::Busy: call->Fail(BusyError(p_.worker->Pending())); break;
    case Worker::Admit::Closed: call->Fail(kClosed); break;
  }
  call->Deliver(env);
  return promise;
}

// callState(id): ms since the call was handed to a thread, -1 while queued, -2 once done.
Napi::Value Connection::CallState(const Napi::CallbackInfo& info) {
  uint64_t id = U64Value(info.Env(), info.Length() > 0 ? info[0] : info.Env().Undefined(), "id");
  return Napi::Number::New(info.Env(), p_.worker->CallState(id));
}

// cancelQueued(id): a call still queued never runs and its Promise rejects now (busy, with how
// long it waited); true if it was still queued.
Napi::Value Connection::CancelQueued(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t id = U64Value(env, info.Length() > 0 ? info[0] : env.Undefined(), "id");
  std::unique_ptr<Task> t = p_.worker->TakeQueued(id);
  if (!t) return Napi::Boolean::New(env, false);
  t->Fail(QueuedTooLong(*t));
  t->Deliver(env);
  return Napi::Boolean::New(env, true);
}

Napi::Value Connection::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string uri = StringArg(info, 0, "uri");
  Napi::Object opts = OptionsArg(info, 1);
  uint32_t interval = U32Option(env, opts, "keepaliveInterval", 5, 0, INT_MAX);
  uint32_t count = U32Option(env, opts, "keepaliveCount", 3, 0, UINT_MAX);
  uint32_t timeoutMs = U32Option(env, opts, "callTimeoutMs", 30000, 1, 3600000);
  uint32_t maxPending = U32Option(env, opts, "maxPendingCalls", 64, 1, 100000);
  uint32_t queueTimeoutMs = U32Option(env, opts, "queueTimeoutMs", 2ULL * timeoutMs, 1, 3600000);
  // Domain lanes, each its own connection with one thread (worker.h): never two threads on one
  // connection, since libvirt 9.0's remote client crashes (SIGSEGV in its I/O loop) when
  // keepalive drops a connection that two threads are waiting on and the daemon then answers.
  uint32_t lanes = U32Option(env, opts, "domainThreads", 4, 0, 64);

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
  auto link = std::make_shared<Link>(Link{sink, parts->js});
  parts->regs = std::make_shared<Registrations>(link);
  parts->worker = std::make_shared<Worker>(sink, lanes, maxPending);
  parts->envState = envState;
  parts->timeoutMs = timeoutMs;
  parts->queueTimeoutMs = queueTimeoutMs;
  // A lane's connection: like the main one, minus events; its close is reported like the main
  // one's (any of them dropping means libvirtd went away or hung: the owner reconnects).
  parts->worker->SetLaneOpen([uri, interval, count, link]() {
    virConnectPtr c = virConnectOpen(uri.c_str());
    if (c == nullptr) throw VirFailure{VirError::Capture("cannot open a libvirt connection for domain calls")};
    if (interval > 0 && virConnectSetKeepAlive(c, static_cast<int>(interval), count) < 0) virResetLastError();
    auto regs = std::make_shared<Registrations>(link);
    regs->WatchClose(c);
    return std::make_pair(c, regs);
  });
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
      env, [regs](virConnectPtr c) { if (c != nullptr) regs->Clear(c); return Done{}; }, DoneToUndefined, &promise);
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

Napi::Value Connection::SubscribeEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Registrations> regs = p_.regs;
  std::shared_ptr<JsSide> js = p_.js;
  std::shared_ptr<Sink> sink = p_.worker->sink();
  return Submit<Done>(
      env, "", [regs](virConnectPtr c) { regs->Subscribe(c); return Done{}; },
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
      env, "", [regs](virConnectPtr c) { regs->Unsubscribe(c); return Done{}; },
      [js, sink](Napi::Env env, Done&) -> Napi::Value {
        if (js->eventsRef) {
          sink->Unref(env);
          js->eventsRef = false;
        }
        return env.Undefined();
      });
}

}  // namespace bca
