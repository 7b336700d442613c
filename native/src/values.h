// Argument checking and error values shared by the binding's modules.
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <cstdint>
#include <string>

namespace bca {

// A libvirt error captured on the thread that saw it (virGetLastError is thread-local).
struct VirError {
  int code = 0;
  int domain = 0;
  std::string message;
  // Set when the binding, not libvirt, failed the call: "busy", "timeout" or "closed".
  std::string reason;

  // Reads and clears the calling thread's last libvirt error.
  static VirError Capture(const char* fallback);
  Napi::Error ToJs(Napi::Env env) const;
};

// Thrown from a worker's Execute() and turned into a rejected Promise.
struct VirFailure {
  VirError error;
};

[[noreturn]] void ThrowLastError(const char* fallback);

// Synchronous argument checks: a bad argument is a programming error and throws a TypeError.
std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name);
Napi::Object OptionsArg(const Napi::CallbackInfo& info, size_t index);
bool BoolOption(const Napi::Object& options, const char* name);
// Accepts a BigInt or a non-negative safe-integer Number; absent/undefined gives `fallback`.
uint64_t U64Option(const Napi::Object& options, const char* name, uint64_t fallback);
uint64_t U64Value(Napi::Env env, const Napi::Value& value, const char* name);

Napi::Value BigIntFromU64(Napi::Env env, uint64_t v);

// virDomainBlockJobType as the facade names it.
const char* BlockJobTypeName(int type);

}  // namespace bca
