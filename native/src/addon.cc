// Entry point of the libvirt binding: a focused N-API addon over libvirt.so.
#include <napi.h>

#include "addon.h"
#include "connection.h"
#include "event_loop.h"

namespace bca {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (!EnsureEventLoop()) {
    throw Napi::Error::New(env, "libvirt could not be initialised (virInitialize or the event loop failed)");
  }
  auto* data = new AddonData();
  data->state = EnvState::Install(env);
  data->connectionCtor = Napi::Persistent(Connection::Define(env));
  env.SetInstanceData(data);
  exports.Set("open", Napi::Function::New(env, Connection::Open, "open"));
  return exports;
}

}  // namespace bca

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return bca::Init(env, exports); }

NODE_API_MODULE(blockcopy_libvirt, InitAddon)
