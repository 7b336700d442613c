#include "values.h"

#include <cmath>
#include <cstring>

namespace bca {

VirError VirError::Capture(const char* fallback) {
  VirError e;
  virErrorPtr last = virGetLastError();
  if (last != nullptr) {
    e.code = last->code;
    e.domain = last->domain;
    e.message = last->message != nullptr ? last->message : fallback;
  } else {
    e.code = VIR_ERR_INTERNAL_ERROR;
    e.domain = VIR_FROM_NONE;
    e.message = fallback;
  }
  virResetLastError();
  return e;
}

Napi::Error VirError::ToJs(Napi::Env env) const {
  Napi::Error err = Napi::Error::New(env, message);
  err.Value().Set("code", Napi::Number::New(env, code));
  err.Value().Set("domain", Napi::Number::New(env, domain));
  err.Value().Set("libvirt", Napi::Boolean::New(env, true));
  if (!reason.empty()) err.Value().Set("reason", Napi::String::New(env, reason));
  return err;
}

void ThrowLastError(const char* fallback) {
  throw VirFailure{VirError::Capture(fallback)};
}

std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsString()) {
    throw Napi::TypeError::New(env, std::string(name) + " must be a string");
  }
  std::string s = info[index].As<Napi::String>().Utf8Value();
  // libvirt takes C strings: an embedded NUL would silently truncate the argument.
  if (s.find('\0') != std::string::npos) {
    throw Napi::TypeError::New(env, std::string(name) + " must not contain NUL characters");
  }
  if (s.empty()) {
    throw Napi::TypeError::New(env, std::string(name) + " must not be empty");
  }
  return s;
}

Napi::Object OptionsArg(const Napi::CallbackInfo& info, size_t index) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || info[index].IsUndefined() || info[index].IsNull()) {
    return Napi::Object::New(env);
  }
  if (!info[index].IsObject()) {
    throw Napi::TypeError::New(env, "options must be an object");
  }
  return info[index].As<Napi::Object>();
}

bool BoolOption(const Napi::Object& options, const char* name) {
  Napi::Value v = options.Get(name);
  if (v.IsUndefined() || v.IsNull()) return false;
  if (!v.IsBoolean()) {
    throw Napi::TypeError::New(options.Env(), std::string(name) + " must be a boolean");
  }
  return v.As<Napi::Boolean>().Value();
}

uint64_t U64Value(Napi::Env env, const Napi::Value& value, const char* name) {
  if (value.IsBigInt()) {
    bool lossless = false;
    uint64_t v = value.As<Napi::BigInt>().Uint64Value(&lossless);
    // lossless is false for negative values and for values above 2^64-1.
    if (!lossless) {
      throw Napi::TypeError::New(env, std::string(name) + " must fit an unsigned 64-bit integer");
    }
    return v;
  }
  if (value.IsNumber()) {
    double d = value.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d < 0 || std::floor(d) != d || d > 9007199254740991.0) {
      throw Napi::TypeError::New(env, std::string(name) + " must be a non-negative safe integer or a BigInt");
    }
    return static_cast<uint64_t>(d);
  }
  throw Napi::TypeError::New(env, std::string(name) + " must be a number or a BigInt");
}

uint64_t U64Option(const Napi::Object& options, const char* name, uint64_t fallback) {
  Napi::Value v = options.Get(name);
  if (v.IsUndefined()) return fallback;
  return U64Value(options.Env(), v, name);
}

Napi::Value BigIntFromU64(Napi::Env env, uint64_t v) {
  return Napi::BigInt::New(env, v);
}

const char* BlockJobTypeName(int t) {
  switch (t) {
    case VIR_DOMAIN_BLOCK_JOB_TYPE_PULL: return "pull";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_COPY: return "copy";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT: return "commit";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT: return "activeCommit";
    case VIR_DOMAIN_BLOCK_JOB_TYPE_BACKUP: return "backup";
    default: return "unknown";
  }
}

}  // namespace bca
