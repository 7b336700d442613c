// libvirt callbacks (close, BLOCK_JOB_2, lifecycle, JOB_COMPLETED) and their delivery to the JS object.
//
// libvirt gets an integer id, never a pointer: the callbacks look the id up in a locked table
// (as libvirt-go-module does), so a call arriving after the binding forgot the registration, or
// for a driver that never calls the free callback (test://), finds nothing instead of freed memory.
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

#include <cstdint>
#include <memory>
#include <mutex>

#include "sink.h"

namespace bca {

// The JS side of one connection. Touched only on the JS thread.
struct JsSide {
  napi_ref self = nullptr;   // weak: events never keep a dropped connection alive
  bool gone = false;         // the JS object was finalized
  bool userClosed = false;   // close() was called: no close notification after that
  int pendingClose = -1;     // a close that arrived before a handler was installed
  bool eventsRef = false;    // the sink keeps the process alive while events are subscribed
  // The object's handler property (e.g. "onclose") when it is a function, else empty.
  Napi::Function Handler(Napi::Env env, const char* name);
  // Calls the close handler, or keeps the reason until one is installed.
  void DeliverClose(Napi::Env env, int reason);
};

// Where a connection's callbacks go: its sink and its JS side.
struct Link {
  std::shared_ptr<Sink> sink;
  std::shared_ptr<JsSide> js;
};

// The libvirt registrations of one connection; changed only on its call threads, one at a time.
class Registrations {
 public:
  explicit Registrations(std::shared_ptr<Link> link) : link_(std::move(link)) {}
  // Both are idempotent; Subscribe throws VirFailure and leaves nothing registered on failure.
  void Subscribe(virConnectPtr conn);
  void Unsubscribe(virConnectPtr conn);
  // Registers the close callback (best effort on drivers without one).
  void WatchClose(virConnectPtr conn);
  // Everything off: events, close callback, table entries. For the close and a failed open.
  void Clear(virConnectPtr conn);

 private:
  void UnsubscribeLocked(virConnectPtr conn);
  std::mutex m_;
  bool cleared_ = false;
  std::shared_ptr<Link> link_;
  int blockJobId_ = -1, lifecycleId_ = -1, jobCompletedId_ = -1;
  uint64_t blockJobKey_ = 0, lifecycleKey_ = 0, jobCompletedKey_ = 0, closeKey_ = 0;
};

}  // namespace bca
