// Delivery of libvirt events (called on the libvirt event-loop thread) to JavaScript.
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

namespace bca {

// One domain-event subscription: a BLOCK_JOB_2 and a LIFECYCLE registration sharing one
// thread-safe function. The TSFN is released when libvirt frees both registrations.
struct EventSubscription {
  int blockJobId = -1;
  int lifecycleId = -1;
};

// Registers both callbacks on `conn` (blocking: call off the JS thread). `tsfn` must already
// hold one acquired thread count per registration (see AcquireForRegistrations).
// Throws VirFailure when libvirt refuses; nothing stays registered then.
EventSubscription RegisterDomainEvents(virConnectPtr conn, Napi::ThreadSafeFunction tsfn);
void DeregisterDomainEvents(virConnectPtr conn, const EventSubscription& sub);

Napi::ThreadSafeFunction NewEventFunction(Napi::Env env, Napi::Function listener);

// Close callback: holder owns a TSFN that is released by libvirt's free callback.
void RegisterCloseCallback(virConnectPtr conn, Napi::ThreadSafeFunction tsfn);
void UnregisterCloseCallback(virConnectPtr conn);
Napi::ThreadSafeFunction NewCloseFunction(Napi::Env env, Napi::Function listener);

}  // namespace bca
