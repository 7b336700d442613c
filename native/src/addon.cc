// Entry point of the libvirt binding: a focused N-API addon over libvirt.so.
#include <napi.h>

#include <atomic>

#include "addon.h"
#include "connection.h"
#include "event_loop.h"

namespace bca {

namespace {
std::atomic<bool> shuttingDown{false};
}

bool AddonData::ShuttingDown() { return shuttingDown.load(); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (!EnsureEventLoop()) {
    throw Napi::Error::New(env, "libvirt could not be initialised (virInitialize or the event loop failed)");
  }
  auto* data = new AddonData();
  data->connectionCtor = Napi::Persistent(Connection::Define(env));
  env.SetInstanceData(data);
  // Registered before any connection exists, so it runs before N-API finalizes leftover objects.
  napi_add_env_cleanup_hook(env, [](void*) { shuttingDown.store(true); }, nullptr);

  exports.Set("open", Napi::Function::New(env, Connection::Open, "open"));
  exports.Set("libraryVersion", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    unsigned long v = 0;
    virGetVersion(&v, nullptr, nullptr);
    return Napi::String::New(info.Env(), std::to_string(v / 1000000) + "." + std::to_string((v / 1000) % 1000) +
                                             "." + std::to_string(v % 1000));
  }));
  return exports;
}

}  // namespace bca

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return bca::Init(env, exports); }

NODE_API_MODULE(blockcopy_libvirt, InitAddon)
