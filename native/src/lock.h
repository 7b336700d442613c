// flock(2) for the agent's state directory lock: Node has none. Kept apart from the libvirt code.
#pragma once

#include <napi.h>

namespace bca {

// flock(fd, exclusive, nonblocking): true once held, false if another holder has it
// (nonblocking only); throws with the errno otherwise. The kernel drops the lock when the file
// description closes, so when the process dies.
Napi::Value Flock(const Napi::CallbackInfo& info);

}  // namespace bca
