#include "events.h"

#include <string>
#include <unordered_map>

#include "typed_params.h"
#include "values.h"

namespace bca {

namespace {

// Leaked on purpose: libvirt's event thread may still call in while static destructors run at exit.
struct Table {
  std::mutex m;
  uint64_t next = 1;
  std::unordered_map<uint64_t, std::shared_ptr<Link>> links;
};
Table& table() {
  static Table* t = new Table();
  return *t;
}

uint64_t AddLink(std::shared_ptr<Link> link) {
  std::lock_guard<std::mutex> lock(table().m);
  uint64_t key = table().next++;
  table().links.emplace(key, std::move(link));
  return key;
}

std::shared_ptr<Link> GetLink(void* opaque) {
  std::lock_guard<std::mutex> lock(table().m);
  auto it = table().links.find(reinterpret_cast<uintptr_t>(opaque));
  return it == table().links.end() ? nullptr : it->second;
}

void RemoveLink(uint64_t key) {
  if (key == 0) return;
  std::shared_ptr<Link> dropped;  // freed outside the lock
  std::lock_guard<std::mutex> lock(table().m);
  auto it = table().links.find(key);
  if (it == table().links.end()) return;
  dropped = std::move(it->second);
  table().links.erase(it);
}

void FreeKey(void* opaque) { RemoveLink(reinterpret_cast<uintptr_t>(opaque)); }

void* KeyPtr(uint64_t key) { return reinterpret_cast<void*>(static_cast<uintptr_t>(key)); }

const char* BlockJobStatusName(int s) {
  switch (s) {
    case VIR_DOMAIN_BLOCK_JOB_COMPLETED: return "completed";
    case VIR_DOMAIN_BLOCK_JOB_FAILED: return "failed";
    case VIR_DOMAIN_BLOCK_JOB_CANCELED: return "canceled";
    case VIR_DOMAIN_BLOCK_JOB_READY: return "ready";
    default: return nullptr;
  }
}

const char* LifecycleName(int e) {
  switch (e) {
    case VIR_DOMAIN_EVENT_DEFINED: return "defined";
    case VIR_DOMAIN_EVENT_UNDEFINED: return "undefined";
    case VIR_DOMAIN_EVENT_STARTED: return "started";
    case VIR_DOMAIN_EVENT_SUSPENDED: return "suspended";
    case VIR_DOMAIN_EVENT_RESUMED: return "resumed";
    case VIR_DOMAIN_EVENT_STOPPED: return "stopped";
    case VIR_DOMAIN_EVENT_SHUTDOWN: return "shutdown";
    case VIR_DOMAIN_EVENT_PMSUSPENDED: return "pmsuspended";
    case VIR_DOMAIN_EVENT_CRASHED: return "crashed";
    default: return "unknown";
  }
}

const char* CloseReasonName(int r) {
  switch (r) {
    case VIR_CONNECT_CLOSE_REASON_ERROR: return "error";
    case VIR_CONNECT_CLOSE_REASON_EOF: return "eof";
    case VIR_CONNECT_CLOSE_REASON_KEEPALIVE: return "keepalive";
    case VIR_CONNECT_CLOSE_REASON_CLIENT: return "client";
    default: return "unknown";
  }
}

struct EventMessage : Message {
  std::shared_ptr<JsSide> js;
  bool blockJob = false;
  bool jobCompleted = false;
  TypedValues stats;  // job completed: the completed job's stats, as virDomainGetJobStats
  std::string name, uuid, disk;
  int a = 0;  // block job: type;   lifecycle: event
  int b = 0;  // block job: status; lifecycle: detail

  void Deliver(Napi::Env env) override {
    if (js->gone || js->userClosed) return;
    Napi::Function fn = js->Handler(env, "onevent");
    if (fn.IsEmpty()) return;
    Napi::Object ev = Napi::Object::New(env);
    Napi::Object dom = Napi::Object::New(env);
    dom.Set("name", name);
    dom.Set("uuid", uuid);
    ev.Set("domain", dom);
    if (jobCompleted) {
      ev.Set("kind", "jobCompleted");
      ev.Set("stats", TypedValuesToJs(env, stats));
    } else if (blockJob) {
      ev.Set("kind", "blockJob");
      ev.Set("disk", disk);
      ev.Set("type", BlockJobTypeName(a));
      ev.Set("status", BlockJobStatusName(b));
    } else {
      ev.Set("kind", "lifecycle");
      ev.Set("event", LifecycleName(a));
      ev.Set("detail", b);
    }
    fn.Call({ev});
  }
};

struct CloseMessage : Message {
  std::shared_ptr<JsSide> js;
  int reason = 0;
  void Deliver(Napi::Env env) override { js->DeliverClose(env, reason); }
};

std::unique_ptr<EventMessage> PayloadFor(const std::shared_ptr<Link>& link, virDomainPtr dom) {
  auto p = std::make_unique<EventMessage>();
  p->js = link->js;
  const char* name = virDomainGetName(dom);
  if (name != nullptr) p->name = name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) == 0) p->uuid = uuid;
  return p;
}

// The callbacks run on libvirt's event-loop thread and never block it: Post only queues.
void OnBlockJob(virConnectPtr, virDomainPtr dom, const char* disk, int type, int status, void* opaque) {
  // A status the facade's types do not list (a future libvirt) is not passed on as a guess.
  if (BlockJobStatusName(status) == nullptr) return;
  auto link = GetLink(opaque);
  if (!link) return;
  auto p = PayloadFor(link, dom);
  p->blockJob = true;
  p->disk = disk != nullptr ? disk : "";
  p->a = type;
  p->b = status;
  link->sink->Post(std::move(p));
}

int OnLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  auto link = GetLink(opaque);
  if (!link) return 0;
  auto p = PayloadFor(link, dom);
  p->a = event;
  p->b = detail;
  link->sink->Post(std::move(p));
  return 0;
}

// JOB_COMPLETED: libvirt frees params when this returns, so they are copied first.
void OnJobCompleted(virConnectPtr, virDomainPtr dom, virTypedParameterPtr params, int nparams, void* opaque) {
  auto link = GetLink(opaque);
  if (!link) return;
  auto p = PayloadFor(link, dom);
  p->jobCompleted = true;
  p->stats = CopyTypedParams(params, nparams);
  link->sink->Post(std::move(p));
}

void OnClose(virConnectPtr, int reason, void* opaque) {
  auto link = GetLink(opaque);
  if (!link) return;
  auto m = std::make_unique<CloseMessage>();
  m->js = link->js;
  m->reason = reason;
  link->sink->Post(std::move(m));
}

int RegisterOne(virConnectPtr conn, int eventId, virConnectDomainEventGenericCallback cb, uint64_t key) {
  int id = virConnectDomainEventRegisterAny(conn, nullptr, eventId, cb, KeyPtr(key), FreeKey);
  if (id < 0) {
    VirError e = VirError::Capture("cannot register domain events");
    RemoveLink(key);  // libvirt does not call the free callback when registration fails
    throw VirFailure{e};
  }
  return id;
}

}  // namespace

Napi::Function JsSide::Handler(Napi::Env env, const char* name) {
  if (gone || self == nullptr) return Napi::Function();
  napi_value obj = nullptr;
  if (napi_get_reference_value(env, self, &obj) != napi_ok || obj == nullptr) return Napi::Function();
  Napi::Value fn = Napi::Object(env, obj).Get(name);
  return fn.IsFunction() ? fn.As<Napi::Function>() : Napi::Function();
}

void JsSide::DeliverClose(Napi::Env env, int reason) {
  if (gone || userClosed) return;
  Napi::Function fn = Handler(env, "onclose");
  if (fn.IsEmpty()) {
    // Closed before the facade installed its handler (e.g. right after open): keep it for then.
    if (pendingClose < 0) pendingClose = reason;
    return;
  }
  pendingClose = -1;
  fn.Call({Napi::String::New(env, CloseReasonName(reason))});
}

void Registrations::Subscribe(virConnectPtr conn) {
  std::lock_guard<std::mutex> lock(m_);
  if (cleared_) throw VirFailure{VirError{VIR_ERR_INVALID_CONN, VIR_FROM_NONE, "the libvirt connection is closed", "closed"}};
  if (blockJobId_ >= 0) return;
  uint64_t bk = AddLink(link_);
  int bj = RegisterOne(conn, VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, VIR_DOMAIN_EVENT_CALLBACK(OnBlockJob), bk);
  uint64_t lk = AddLink(link_);
  int lc;
  try {
    lc = RegisterOne(conn, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle), lk);
  } catch (...) {
    if (virConnectDomainEventDeregisterAny(conn, bj) < 0) virResetLastError();
    RemoveLink(bk);
    throw;
  }
  uint64_t jk = AddLink(link_);
  int jc;
  try {
    jc = RegisterOne(conn, VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, VIR_DOMAIN_EVENT_CALLBACK(OnJobCompleted), jk);
  } catch (...) {
    if (virConnectDomainEventDeregisterAny(conn, bj) < 0) virResetLastError();
    if (virConnectDomainEventDeregisterAny(conn, lc) < 0) virResetLastError();
    RemoveLink(bk);
    RemoveLink(lk);
    throw;
  }
  blockJobId_ = bj;
  lifecycleId_ = lc;
  jobCompletedId_ = jc;
  blockJobKey_ = bk;
  lifecycleKey_ = lk;
  jobCompletedKey_ = jk;
}

void Registrations::Unsubscribe(virConnectPtr conn) {
  std::lock_guard<std::mutex> lock(m_);
  UnsubscribeLocked(conn);
}

void Registrations::UnsubscribeLocked(virConnectPtr conn) {
  // Failures mean the connection is already gone; libvirt then frees the registrations itself.
  if (blockJobId_ >= 0 && virConnectDomainEventDeregisterAny(conn, blockJobId_) < 0) virResetLastError();
  if (lifecycleId_ >= 0 && virConnectDomainEventDeregisterAny(conn, lifecycleId_) < 0) virResetLastError();
  if (jobCompletedId_ >= 0 && virConnectDomainEventDeregisterAny(conn, jobCompletedId_) < 0) virResetLastError();
  // The table entries go now: a late callback finds nothing.
  RemoveLink(blockJobKey_);
  RemoveLink(lifecycleKey_);
  RemoveLink(jobCompletedKey_);
  blockJobId_ = lifecycleId_ = jobCompletedId_ = -1;
  blockJobKey_ = lifecycleKey_ = jobCompletedKey_ = 0;
}

void Registrations::WatchClose(virConnectPtr conn) {
  std::lock_guard<std::mutex> lock(m_);
  if (closeKey_ != 0) return;
  closeKey_ = AddLink(link_);
  // Drivers without close callbacks (test://) report success and never call FreeKey: the entry
  // is removed by Clear() either way.
  if (virConnectRegisterCloseCallback(conn, OnClose, KeyPtr(closeKey_), FreeKey) < 0) {
    virResetLastError();
    RemoveLink(closeKey_);
    closeKey_ = 0;
  }
}

void Registrations::Clear(virConnectPtr conn) {
  std::lock_guard<std::mutex> lock(m_);
  cleared_ = true;
  UnsubscribeLocked(conn);
  if (closeKey_ != 0) {
    if (virConnectUnregisterCloseCallback(conn, OnClose) < 0) virResetLastError();
    RemoveLink(closeKey_);
    closeKey_ = 0;
  }
}

}  // namespace bca
