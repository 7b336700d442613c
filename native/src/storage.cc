// The storage pool calls of a connection (a copy or backup into a pool): each on the pool's own
// queue, so a hung storage backend holds one lane, not the domain-less main lane.
#include <libvirt/virterror.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "connection.h"
#include "values.h"

namespace bca {

namespace {

// Looks the pool up, runs `fn` on it, frees it; a failure of either is thrown with libvirt's error.
template <typename T, typename Fn>
T WithPool(virConnectPtr c, const std::string& pool, Fn fn) {
  virStoragePoolPtr p = virStoragePoolLookupByName(c, pool.c_str());
  if (p == nullptr) ThrowLastError("storage pool not found");
  std::optional<VirFailure> failed;
  std::optional<T> result;
  try {
    result = fn(p);
  } catch (VirFailure& f) {
    failed = f;
  }
  virStoragePoolFree(p);
  if (failed) throw *failed;
  return *result;
}

// A string libvirt allocated, copied and freed; null is libvirt's failure, thrown as `what`.
std::string TakeString(char* s, const char* what) {
  if (s == nullptr) ThrowLastError(what);
  std::string out(s);
  free(s);
  return out;
}

Napi::Value ToJs(Napi::Env env, std::string& s) { return Napi::String::New(env, s); }

}  // namespace

Napi::Value Connection::StorageVolPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string pool = StringArg(info, 0, "pool");
  std::string volume = StringArg(info, 1, "volume");
  return Submit<std::string>(
      env, "pool:" + pool,
      [pool, volume](virConnectPtr c) {
        return WithPool<std::string>(c, pool, [&volume](virStoragePoolPtr p) {
          virStorageVolPtr v = virStorageVolLookupByName(p, volume.c_str());
          if (v == nullptr) ThrowLastError("storage volume not found");
          std::optional<VirFailure> failed;
          std::string path;
          try {
            path = TakeString(virStorageVolGetPath(v), "cannot read the storage volume's path");
          } catch (VirFailure& f) {
            failed = f;
          }
          virStorageVolFree(v);
          if (failed) throw *failed;
          return path;
        });
      },
      ToJs);
}

// A storage pool's XML (virStoragePoolGetXMLDesc): its type and target path, for a copy into it.
Napi::Value Connection::StoragePoolXml(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string pool = StringArg(info, 0, "pool");
  return Submit<std::string>(
      env, "pool:" + pool,
      [pool](virConnectPtr c) {
        return WithPool<std::string>(c, pool, [](virStoragePoolPtr p) {
          return TakeString(virStoragePoolGetXMLDesc(p, 0), "cannot read the storage pool's XML");
        });
      },
      ToJs);
}

// virStoragePoolRefresh: libvirt's volume list of the pool picks up files written into it.
Napi::Value Connection::StoragePoolRefresh(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string pool = StringArg(info, 0, "pool");
  return Submit<bool>(
      env, "pool:" + pool,
      [pool](virConnectPtr c) {
        return WithPool<bool>(c, pool, [](virStoragePoolPtr p) {
          if (virStoragePoolRefresh(p, 0) < 0) ThrowLastError("cannot refresh the storage pool");
          return true;
        });
      },
      [](Napi::Env env, bool&) -> Napi::Value { return env.Undefined(); });
}

}  // namespace bca
