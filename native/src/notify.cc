// The service manager's notification socket (sd_notify(3)), without libsystemd: one AF_UNIX
// datagram per message. Node's dgram module has no unix datagram sockets.
#include "notify.h"

#include <libvirt/libvirt.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>

namespace bca {

namespace {

std::atomic<uint64_t> ticks{0};

void Tick(int /*timer*/, void* /*opaque*/) { ticks.fetch_add(1, std::memory_order_relaxed); }

// The errno of one send of `message` to `path`; 0 once sent.
int Send(const std::string& path, const std::string& message) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // Abstract names ('@name') have no terminating NUL; a path's is counted.
  const bool abstract = !path.empty() && path[0] == '@';
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) return ENAMETOOLONG;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (abstract) addr.sun_path[0] = '\0';
  const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errno;
  ssize_t n;
  do {
    n = sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
  } while (n < 0 && errno == EINTR);
  const int err = n < 0 ? errno : 0;
  close(fd);
  return err;
}

}  // namespace

Napi::Value NotifySocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    throw Napi::TypeError::New(env, "notifySocket(path: string, message: string)");
  }
  return Napi::Number::New(env, Send(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value()));
}

bool StartEventLoopTicks() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] { ok = virEventAddTimeout(1000, Tick, nullptr, nullptr) >= 0; });
  return ok;
}

Napi::Value EventLoopTicks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Napi::Number::New(env, StartEventLoopTicks() ? static_cast<double>(ticks.load(std::memory_order_relaxed)) : -1.0);
}

}  // namespace bca
