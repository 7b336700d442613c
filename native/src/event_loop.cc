#include "event_loop.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <algorithm>
#include <chrono>
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
      int failures = 0;
      for (;;) {
        if (virEventRunDefaultImpl() == 0) {
          failures = 0;
          continue;
        }
        virResetLastError();
        // A loop that keeps failing (e.g. poll() errors) must not spin a core: back off
        // exponentially from 1 ms up to 1 s.
        failures = std::min(failures + 1, 10);
        std::this_thread::sleep_for(std::chrono::milliseconds(1 << failures));
      }
    }).detach();
    ok = true;
  });
  return ok;
}

}  // namespace bca
