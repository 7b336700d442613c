#include "event_loop.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <mutex>
#include <thread>

namespace bca {

namespace {

// libvirt prints every error to stderr unless an error function is installed; the binding
// reports errors through rejected Promises instead.
void SilentErrorFunc(void*, virErrorPtr) {}

std::once_flag once;
bool ok = false;

}  // namespace

bool EnsureEventLoop() {
  // Must run before the first virConnectOpen: events and keepalive need a registered loop.
  std::call_once(once, [] {
    virSetErrorFunc(nullptr, SilentErrorFunc);
    if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0) return;
    // One process-wide thread for libvirt's event loop; it lives as long as the process
    // (libvirt offers no way to unregister the default implementation).
    std::thread([] {
      for (;;) {
        if (virEventRunDefaultImpl() < 0) virResetLastError();
      }
    }).detach();
    ok = true;
  });
  return ok;
}

}  // namespace bca
