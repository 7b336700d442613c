// Entry point of the libvirt binding: a focused N-API addon over libvirt.so.
#include <dlfcn.h>
#include <napi.h>

#include <mutex>

#include "addon.h"
#include "connection.h"
#include "event_loop.h"
#include "lock.h"
#include "notify.h"

namespace bca {

namespace {

// Node dlcloses an addon when the last environment that loaded it ends (a worker thread that
// exits), but this addon's threads (libvirt's event loop, connection threads stuck in libvirt)
// outlive every environment: keep this library, and libvirt.so with it, mapped for good.
void PinLibrary() {
  static std::once_flag once;
  std::call_once(once, [] {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&PinLibrary), &info) != 0 && info.dli_fname != nullptr) {
      dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
    }
  });
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  PinLibrary();
  if (!EnsureEventLoop()) {
    throw Napi::Error::New(env, "libvirt could not be initialised (virInitialize or the event loop failed)");
  }
  auto* data = new AddonData();
  data->state = EnvState::Install(env);
  data->connectionCtor = Napi::Persistent(Connection::Define(env));
  env.SetInstanceData(data);
  exports.Set("open", Napi::Function::New(env, Connection::Open, "open"));
  exports.Set("flock", Napi::Function::New(env, Flock, "flock"));
  exports.Set("notifySocket", Napi::Function::New(env, NotifySocket, "notifySocket"));
  exports.Set("eventLoopTicks", Napi::Function::New(env, EventLoopTicks, "eventLoopTicks"));
  return exports;
}

}  // namespace bca

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return bca::Init(env, exports); }

NODE_API_MODULE(blockcopy_libvirt, InitAddon)
