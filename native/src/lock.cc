// The state directory's lock is a kernel lock, so a dead agent can never leave it held.
#include "lock.h"

#include <sys/file.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace bca {

Napi::Value Flock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsBoolean() || !info[2].IsBoolean()) {
    throw Napi::TypeError::New(env, "flock(fd: number, exclusive: boolean, nonblocking: boolean)");
  }
  const int fd = info[0].As<Napi::Number>().Int32Value();
  int op = info[1].As<Napi::Boolean>().Value() ? LOCK_EX : LOCK_SH;
  if (info[2].As<Napi::Boolean>().Value()) op |= LOCK_NB;
  int rc;
  do {
    rc = flock(fd, op);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  const int err = errno;
  Napi::Error e = Napi::Error::New(env, std::string("flock: ") + std::strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  throw e;
}

}  // namespace bca
