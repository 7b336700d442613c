// Per-environment state of the addon (one per main thread or worker thread that loads it).
#pragma once

#include <napi.h>

#include <memory>

#include "sink.h"

namespace bca {

struct AddonData {
  Napi::FunctionReference connectionCtor;
  // This environment's shutdown flag and sinks; never shared with another environment.
  std::shared_ptr<EnvState> state;

  static AddonData* Get(Napi::Env env) { return env.GetInstanceData<AddonData>(); }
};

}  // namespace bca
