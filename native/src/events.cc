#include "events.h"

#include <string>

#include "values.h"

namespace bca {

namespace {

struct EventPayload {
  bool blockJob = false;
  std::string name;
  std::string uuid;
  std::string disk;
  int a = 0;  // block job: type;   lifecycle: event
  int b = 0;  // block job: status; lifecycle: detail
};

// One per libvirt registration; libvirt calls FreeHolder when it no longer uses it.
struct Holder {
  Napi::ThreadSafeFunction tsfn;
};

void FreeHolder(void* opaque) {
  auto* h = static_cast<Holder*>(opaque);
  h->tsfn.Release();
  delete h;
}

const char* BlockJobStatusName(int s) {
  switch (s) {
    case VIR_DOMAIN_BLOCK_JOB_COMPLETED: return "completed";
    case VIR_DOMAIN_BLOCK_JOB_FAILED: return "failed";
    case VIR_DOMAIN_BLOCK_JOB_CANCELED: return "canceled";
    case VIR_DOMAIN_BLOCK_JOB_READY: return "ready";
    default: return "unknown";
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

void CallListener(Napi::Env env, Napi::Function fn, EventPayload* p) {
  // env is null while the TSFN is being torn down: drop the event.
  if (env != nullptr && fn != nullptr) {
    Napi::Object ev = Napi::Object::New(env);
    Napi::Object dom = Napi::Object::New(env);
    dom.Set("name", p->name);
    dom.Set("uuid", p->uuid);
    ev.Set("domain", dom);
    if (p->blockJob) {
      ev.Set("kind", "blockJob");
      ev.Set("disk", p->disk);
      ev.Set("type", BlockJobTypeName(p->a));
      ev.Set("status", BlockJobStatusName(p->b));
    } else {
      ev.Set("kind", "lifecycle");
      ev.Set("event", LifecycleName(p->a));
      ev.Set("detail", p->b);
    }
    fn.Call({ev});
  }
  delete p;
}

void Deliver(void* opaque, EventPayload* p) {
  auto* h = static_cast<Holder*>(opaque);
  // Never block libvirt's event loop: the queue is unbounded, so NonBlockingCall only fails
  // when the function is closing, and then the event has nobody to go to.
  if (h->tsfn.NonBlockingCall(p, CallListener) != napi_ok) delete p;
}

EventPayload* PayloadFor(virDomainPtr dom) {
  auto* p = new EventPayload();
  const char* name = virDomainGetName(dom);
  if (name != nullptr) p->name = name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) == 0) p->uuid = uuid;
  return p;
}

void OnBlockJob(virConnectPtr, virDomainPtr dom, const char* disk, int type, int status, void* opaque) {
  EventPayload* p = PayloadFor(dom);
  p->blockJob = true;
  p->disk = disk != nullptr ? disk : "";
  p->a = type;
  p->b = status;
  Deliver(opaque, p);
}

int OnLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  EventPayload* p = PayloadFor(dom);
  p->a = event;
  p->b = detail;
  Deliver(opaque, p);
  return 0;
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

void OnClose(virConnectPtr, int reason, void* opaque) {
  auto* h = static_cast<Holder*>(opaque);
  auto* r = new int(reason);
  auto call = [](Napi::Env env, Napi::Function fn, int* reasonPtr) {
    if (env != nullptr && fn != nullptr) fn.Call({Napi::String::New(env, CloseReasonName(*reasonPtr))});
    delete reasonPtr;
  };
  if (h->tsfn.NonBlockingCall(r, call) != napi_ok) delete r;
}

}  // namespace

Napi::ThreadSafeFunction NewEventFunction(Napi::Env env, Napi::Function listener) {
  // Initial count 1 belongs to the caller, who releases it once registration is settled.
  return Napi::ThreadSafeFunction::New(env, listener, "libvirt-domain-events", 0, 1);
}

namespace {

// One registration holding one acquired count of the TSFN; undone completely on failure.
int RegisterOne(virConnectPtr conn, int eventId, virConnectDomainEventGenericCallback cb, Napi::ThreadSafeFunction tsfn) {
  auto* h = new Holder{tsfn};
  h->tsfn.Acquire();
  int id = virConnectDomainEventRegisterAny(conn, nullptr, eventId, cb, h, FreeHolder);
  if (id < 0) {
    VirError e = VirError::Capture("cannot register domain events");
    FreeHolder(h);
    throw VirFailure{e};
  }
  return id;
}

}  // namespace

EventSubscription RegisterDomainEvents(virConnectPtr conn, Napi::ThreadSafeFunction tsfn) {
  EventSubscription sub;
  sub.blockJobId = RegisterOne(conn, VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, VIR_DOMAIN_EVENT_CALLBACK(OnBlockJob), tsfn);
  try {
    sub.lifecycleId = RegisterOne(conn, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle), tsfn);
  } catch (...) {
    virConnectDomainEventDeregisterAny(conn, sub.blockJobId);
    throw;
  }
  return sub;
}

void DeregisterDomainEvents(virConnectPtr conn, const EventSubscription& sub) {
  // Failures here mean the connection is already gone, and libvirt then frees the holders.
  if (sub.blockJobId >= 0 && virConnectDomainEventDeregisterAny(conn, sub.blockJobId) < 0) virResetLastError();
  if (sub.lifecycleId >= 0 && virConnectDomainEventDeregisterAny(conn, sub.lifecycleId) < 0) virResetLastError();
}

Napi::ThreadSafeFunction NewCloseFunction(Napi::Env env, Napi::Function listener) {
  Napi::ThreadSafeFunction tsfn = Napi::ThreadSafeFunction::New(env, listener, "libvirt-close", 0, 1);
  // A close listener alone must not keep the process alive.
  tsfn.Unref(env);
  return tsfn;
}

void RegisterCloseCallback(virConnectPtr conn, Napi::ThreadSafeFunction tsfn) {
  auto* h = new Holder{tsfn};
  if (virConnectRegisterCloseCallback(conn, OnClose, h, FreeHolder) < 0) {
    VirError e = VirError::Capture("cannot register close callback");
    FreeHolder(h);
    throw VirFailure{e};
  }
}

void UnregisterCloseCallback(virConnectPtr conn) {
  if (virConnectUnregisterCloseCallback(conn, OnClose) < 0) virResetLastError();
}

}  // namespace bca
