// sd_notify(3)'s datagram, and a heartbeat of libvirt's event loop thread, for a service
// manager's readiness and watchdog (src/sd-notify.ts). Kept apart from the libvirt calls.
#pragma once

#include <napi.h>

namespace bca {

// notifySocket(path, message): one datagram to the unix socket `path` ('@' starts an abstract
// name). Nonblocking; never throws on a send failure: returns 0 once sent, else the errno.
// Throws only a TypeError for arguments of the wrong type.
Napi::Value NotifySocket(const Napi::CallbackInfo& info);

// eventLoopTicks(): how many times libvirt's event loop thread (event_loop.cc) has run its
// one-second timer (registered by the first call: an agent without a watchdog never wakes for
// it); -1 if it could not be registered. A count that stops moving means that thread is wedged.
Napi::Value EventLoopTicks(const Napi::CallbackInfo& info);

// Registers that timer on libvirt's default event loop (once; after EnsureEventLoop).
bool StartEventLoopTicks();

}  // namespace bca
