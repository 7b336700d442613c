#include "typed_params.h"

namespace bca {

TypedValues CopyTypedParams(const virTypedParameter* params, int n) {
  TypedValues out;
  if (params == nullptr || n <= 0) return out;
  out.reserve(static_cast<size_t>(n));
  for (int k = 0; k < n; k++) {
    const virTypedParameter& p = params[k];
    TypedValue v;
    v.name = p.field;
    v.type = p.type;
    switch (p.type) {
      case VIR_TYPED_PARAM_INT: v.i = p.value.i; break;
      case VIR_TYPED_PARAM_UINT: v.u = p.value.ui; break;
      case VIR_TYPED_PARAM_LLONG: v.i = p.value.l; break;
      case VIR_TYPED_PARAM_ULLONG: v.u = p.value.ul; break;
      case VIR_TYPED_PARAM_DOUBLE: v.d = p.value.d; break;
      case VIR_TYPED_PARAM_BOOLEAN: v.b = p.value.b != 0; break;
      case VIR_TYPED_PARAM_STRING: v.s = p.value.s != nullptr ? p.value.s : ""; break;
      default: continue;  // a type a future libvirt adds is not passed on as a guess
    }
    out.push_back(std::move(v));
  }
  return out;
}

Napi::Object TypedValuesToJs(Napi::Env env, const TypedValues& values) {
  Napi::Object o = Napi::Object::New(env);
  for (const TypedValue& v : values) {
    switch (v.type) {
      case VIR_TYPED_PARAM_INT: o.Set(v.name, Napi::Number::New(env, static_cast<double>(v.i))); break;
      case VIR_TYPED_PARAM_UINT: o.Set(v.name, Napi::Number::New(env, static_cast<double>(v.u))); break;
      case VIR_TYPED_PARAM_LLONG: o.Set(v.name, Napi::BigInt::New(env, v.i)); break;
      case VIR_TYPED_PARAM_ULLONG: o.Set(v.name, Napi::BigInt::New(env, v.u)); break;
      case VIR_TYPED_PARAM_DOUBLE: o.Set(v.name, Napi::Number::New(env, v.d)); break;
      case VIR_TYPED_PARAM_BOOLEAN: o.Set(v.name, Napi::Boolean::New(env, v.b)); break;
      case VIR_TYPED_PARAM_STRING: o.Set(v.name, Napi::String::New(env, v.s)); break;
      default: break;
    }
  }
  return o;
}

}  // namespace bca
