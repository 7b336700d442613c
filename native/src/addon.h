// Per-environment state of the addon.
#pragma once

#include <napi.h>

namespace bca {

struct AddonData {
  Napi::FunctionReference connectionCtor;

  static AddonData* Get(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
  // True once Node tears the environment down (process exit, worker exit).
  static bool ShuttingDown();
};

}  // namespace bca
