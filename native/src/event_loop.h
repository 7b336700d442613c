#pragma once

namespace bca {

// Installs libvirt's default event loop on a dedicated thread and silences libvirt's stderr
// error printing. Idempotent; returns false if libvirt could not be initialised.
bool EnsureEventLoop();

}  // namespace bca
