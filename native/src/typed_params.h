// libvirt typed parameters copied off libvirt's memory into plain values (so they can cross
// threads) and turned into a JS object: ints and doubles as Numbers, 64-bit ints as BigInts.
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bca {

struct TypedValue {
  std::string name;
  int type = 0;  // VIR_TYPED_PARAM_*
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  bool b = false;
  std::string s;
};

using TypedValues = std::vector<TypedValue>;

// Copies params[0..n) (the caller still frees them).
TypedValues CopyTypedParams(const virTypedParameter* params, int n);
Napi::Object TypedValuesToJs(Napi::Env env, const TypedValues& values);

}  // namespace bca
