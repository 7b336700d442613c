// The libvirt calls of a connection: each one checks its arguments on the JS thread and runs
// on one of the connection's call threads (Connection::Submit): a call on a domain on that
// domain's lane, one naming no domain on the main lane.
#include <libvirt/virterror.h>

#include <climits>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "connection.h"
#include "dom.h"
#include "values.h"

namespace bca {

namespace {

struct DomainInfo {
  std::string name;
  std::string uuid;
  int id = -1;
  bool active = false;
  bool persistent = false;
};

DomainInfo InfoOf(virDomainPtr d) {
  DomainInfo info;
  const char* name = virDomainGetName(d);
  if (name != nullptr) info.name = name;
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(d, uuid) == 0) info.uuid = uuid;
  unsigned int id = virDomainGetID(d);
  info.id = id == static_cast<unsigned int>(-1) ? -1 : static_cast<int>(id);
  virResetLastError();  // a stopped domain has no id: not an error
  // A failure to read the state (connection lost, domain gone) is an error, not "inactive".
  int active = virDomainIsActive(d);
  if (active < 0) ThrowLastError("cannot read the domain state");
  int persistent = virDomainIsPersistent(d);
  if (persistent < 0) ThrowLastError("cannot read whether the domain is persistent");
  info.active = active == 1;
  info.persistent = persistent == 1;
  return info;
}

Napi::Object DomainInfoToJs(Napi::Env env, const DomainInfo& i) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", i.name);
  o.Set("uuid", i.uuid);
  o.Set("id", i.id);
  o.Set("active", i.active);
  o.Set("persistent", i.persistent);
  return o;
}

std::string VersionString(unsigned long v) {
  return std::to_string(v / 1000000) + "." + std::to_string((v / 1000) % 1000) + "." + std::to_string(v % 1000);
}

struct BlockInfoResult {
  uint64_t capacity = 0;
  uint64_t allocation = 0;
  uint64_t physical = 0;
};

struct BlockJobInfoResult {
  bool present = false;
  int type = 0;
  uint64_t bandwidth = 0;
  bool bandwidthInMiB = false;
  uint64_t cur = 0;
  uint64_t end = 0;
};

}  // namespace

// libvirtd answers these without the domain's job (it drops the domain's lock while a monitor
// call waits), so they have a queue of their own per domain: the XML and state of a guest whose
// QEMU hangs stay readable (the storage inventory of every copy reads them) instead of waiting
// behind its monitor calls. One call in flight per domain still holds within each queue.
static std::string ReadQueue(const std::string& key) { return key + " (reads)"; }

Napi::Value Connection::LookupDomain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  return Submit<DomainInfo>(
      env, ReadQueue(key), [key](virConnectPtr c) { Dom d(c, key); return InfoOf(d); },
      [](Napi::Env env, DomainInfo& i) -> Napi::Value { return DomainInfoToJs(env, i); });
}

Napi::Value Connection::ListDomains(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object opts = OptionsArg(info, 0);
  unsigned int flags = BoolOption(opts, "activeOnly") ? VIR_CONNECT_LIST_DOMAINS_ACTIVE : 0;
  return Submit<std::vector<DomainInfo>>(
      env, "", [flags](virConnectPtr c) {
        virDomainPtr* doms = nullptr;
        int n = virConnectListAllDomains(c, &doms, flags);
        if (n < 0) ThrowLastError("cannot list domains");
        std::vector<DomainInfo> out;
        std::optional<VirFailure> failed;
        for (int i = 0; i < n; i++) {
          // A domain undefined while listing is not an error: it is simply no longer there.
          if (!failed) {
            try {
              out.push_back(InfoOf(doms[i]));
            } catch (const VirFailure& f) {
              if (f.error.code != VIR_ERR_NO_DOMAIN) failed = f;
            }
          }
          virDomainFree(doms[i]);
        }
        free(doms);
        if (failed) throw *failed;
        return out;
      },
      [](Napi::Env env, std::vector<DomainInfo>& list) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, list.size());
        for (size_t i = 0; i < list.size(); i++) a.Set(static_cast<uint32_t>(i), DomainInfoToJs(env, list[i]));
        return a;
      });
}

Napi::Value Connection::GetXml(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  Napi::Object opts = OptionsArg(info, 1);
  unsigned int flags = BoolOption(opts, "inactive") ? VIR_DOMAIN_XML_INACTIVE : 0;
  return Submit<std::string>(
      env, ReadQueue(key), [key, flags](virConnectPtr c) {
        Dom d(c, key);
        char* xml = virDomainGetXMLDesc(d, flags);
        if (xml == nullptr) ThrowLastError("cannot read the domain XML");
        std::string s(xml);
        free(xml);
        return s;
      },
      [](Napi::Env env, std::string& s) -> Napi::Value { return Napi::String::New(env, s); });
}

Napi::Value Connection::BlockCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  std::string destXml = StringArg(info, 2, "destinationXml");
  Napi::Object opts = OptionsArg(info, 3);
  unsigned int flags = 0;
  if (BoolOption(opts, "shallow")) flags |= VIR_DOMAIN_BLOCK_COPY_SHALLOW;
  if (BoolOption(opts, "reuseExternal")) flags |= VIR_DOMAIN_BLOCK_COPY_REUSE_EXT;
  if (BoolOption(opts, "transientJob")) flags |= VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB;
  if (BoolOption(opts, "synchronousWrites")) flags |= VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES;
  std::optional<uint64_t> bandwidth, bufSize;
  std::optional<unsigned int> granularity;
  if (!opts.Get("bandwidth").IsUndefined()) bandwidth = U64Option(opts, "bandwidth", 0);
  if (!opts.Get("bufSize").IsUndefined()) bufSize = U64Option(opts, "bufSize", 0);
  if (!opts.Get("granularity").IsUndefined()) {
    uint64_t g = U64Option(opts, "granularity", 0);
    if (g > UINT_MAX) throw Napi::TypeError::New(env, "granularity must fit an unsigned 32-bit integer");
    granularity = static_cast<unsigned int>(g);
  }
  return Submit<Done>(
      env, key, [key, disk, destXml, flags, bandwidth, bufSize, granularity](virConnectPtr c) {
        Dom d(c, key);
        virTypedParameterPtr params = nullptr;
        int n = 0, max = 0;
        bool ok = true;
        if (bandwidth) ok = ok && virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_BLOCK_COPY_BANDWIDTH, *bandwidth) == 0;
        if (granularity) ok = ok && virTypedParamsAddUInt(&params, &n, &max, VIR_DOMAIN_BLOCK_COPY_GRANULARITY, *granularity) == 0;
        if (bufSize) ok = ok && virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_BLOCK_COPY_BUF_SIZE, *bufSize) == 0;
        int rc = ok ? virDomainBlockCopy(d, disk.c_str(), destXml.c_str(), params, n, flags) : -1;
        if (rc < 0) {
          VirError e = VirError::Capture("block copy failed");
          virTypedParamsFree(params, n);
          throw VirFailure{e};
        }
        virTypedParamsFree(params, n);
        return Done{};
      },
      DoneToUndefined);
}

Napi::Value Connection::GetBlockJobInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  return Submit<BlockJobInfoResult>(
      env, key, [key, disk](virConnectPtr c) {
        Dom d(c, key);
        virDomainBlockJobInfo raw{};
        BlockJobInfoResult r;
        int rc = virDomainGetBlockJobInfo(d, disk.c_str(), &raw, VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES);
        if (rc < 0) {
          // Bytes do not fit an unsigned long (32-bit hosts) or the flag is unknown: ask in MiB/s.
          virErrorPtr e = virGetLastError();
          if (e == nullptr || (e->code != VIR_ERR_OVERFLOW && e->code != VIR_ERR_INVALID_ARG)) {
            ThrowLastError("cannot read block job info");
          }
          virResetLastError();
          rc = virDomainGetBlockJobInfo(d, disk.c_str(), &raw, 0);
          if (rc < 0) ThrowLastError("cannot read block job info");
          r.bandwidthInMiB = true;
        }
        if (rc == 0) return r;
        r.present = true;
        r.type = raw.type;
        r.bandwidth = r.bandwidthInMiB ? static_cast<uint64_t>(raw.bandwidth) * 1024 * 1024 : raw.bandwidth;
        r.cur = raw.cur;
        r.end = raw.end;
        return r;
      },
      [](Napi::Env env, BlockJobInfoResult& r) -> Napi::Value {
        if (!r.present) return env.Null();
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", BlockJobTypeName(r.type));
        o.Set("bandwidth", BigIntFromU64(env, r.bandwidth));
        o.Set("bandwidthSource", r.bandwidthInMiB ? "MiB" : "bytes");
        o.Set("cur", BigIntFromU64(env, r.cur));
        o.Set("end", BigIntFromU64(env, r.end));
        return o;
      });
}

// virDomainGetBlockInfo: the disk's virtual size, what its top image has allocated, and the
// size of what holds it. On a running domain libvirtd asks QEMU (a query job on the domain), so
// it runs on the domain's lane, not its read queue.
Napi::Value Connection::GetBlockInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  return Submit<BlockInfoResult>(
      env, key, [key, disk](virConnectPtr c) {
        Dom d(c, key);
        virDomainBlockInfo raw{};
        if (virDomainGetBlockInfo(d, disk.c_str(), &raw, 0) < 0) ThrowLastError("cannot read the disk's sizes");
        BlockInfoResult r;
        r.capacity = raw.capacity;
        r.allocation = raw.allocation;
        r.physical = raw.physical;
        return r;
      },
      [](Napi::Env env, BlockInfoResult& r) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("capacity", BigIntFromU64(env, r.capacity));
        o.Set("allocation", BigIntFromU64(env, r.allocation));
        o.Set("physical", BigIntFromU64(env, r.physical));
        return o;
      });
}

Napi::Value Connection::BlockJobAbort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  Napi::Object opts = OptionsArg(info, 2);
  unsigned int flags = 0;
  if (BoolOption(opts, "async")) flags |= VIR_DOMAIN_BLOCK_JOB_ABORT_ASYNC;
  if (BoolOption(opts, "pivot")) flags |= VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT;
  return Submit<Done>(
      env, key, [key, disk, flags](virConnectPtr c) {
        Dom d(c, key);
        if (virDomainBlockJobAbort(d, disk.c_str(), flags) < 0) ThrowLastError("block job abort failed");
        return Done{};
      },
      DoneToUndefined);
}

Napi::Value Connection::BlockJobSetSpeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  if (info.Length() < 3) throw Napi::TypeError::New(env, "bandwidth is required");
  uint64_t bw = U64Value(env, info[2], "bandwidth");
  if (bw > ULONG_MAX) throw Napi::TypeError::New(env, "bandwidth does not fit an unsigned long");
  return Submit<Done>(
      env, key, [key, disk, bw](virConnectPtr c) {
        Dom d(c, key);
        if (virDomainBlockJobSetSpeed(d, disk.c_str(), static_cast<unsigned long>(bw),
                                      VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES) < 0) {
          ThrowLastError("cannot set the block job speed");
        }
        return Done{};
      },
      DoneToUndefined);
}

// suspend/resume/fsFreeze/fsThaw: one call on one domain, resolving to libvirt's non-negative
// result (for fsFreeze/fsThaw, how many filesystems the guest agent froze or thawed).
Napi::Value Connection::DomainCall(const Napi::CallbackInfo& info, int (*fn)(virDomainPtr),
                                   const char* what) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  return Submit<int>(
      env, key, [key, fn, what](virConnectPtr c) {
        Dom d(c, key);
        int r = fn(d);
        if (r < 0) ThrowLastError(what);
        return r;
      },
      [](Napi::Env env, int& r) -> Napi::Value { return Napi::Number::New(env, r); });
}

Napi::Value Connection::Suspend(const Napi::CallbackInfo& info) {
  return DomainCall(info, [](virDomainPtr d) { return virDomainSuspend(d); }, "cannot suspend the domain");
}

Napi::Value Connection::Resume(const Napi::CallbackInfo& info) {
  return DomainCall(info, [](virDomainPtr d) { return virDomainResume(d); }, "cannot resume the domain");
}

Napi::Value Connection::FsFreeze(const Napi::CallbackInfo& info) {
  return DomainCall(info, [](virDomainPtr d) { return virDomainFSFreeze(d, nullptr, 0, 0); },
                    "cannot freeze the guest's filesystems");
}

Napi::Value Connection::FsThaw(const Napi::CallbackInfo& info) {
  return DomainCall(info, [](virDomainPtr d) { return virDomainFSThaw(d, nullptr, 0, 0); },
                    "cannot thaw the guest's filesystems");
}

// virDomainGetState: the run state and its reason, so a group switch can tell a guest paused by
// someone else (never resumed by the agent) from one it paused itself.
Napi::Value Connection::GetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  struct S {
    int state = 0, reason = 0;
  };
  return Submit<S>(
      env, ReadQueue(key), [key](virConnectPtr c) {
        Dom d(c, key);
        S s;
        if (virDomainGetState(d, &s.state, &s.reason, 0) < 0) ThrowLastError("cannot read the domain's state");
        return s;
      },
      [](Napi::Env env, S& s) -> Napi::Value {
        const char* names[] = {"nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended"};
        Napi::Object o = Napi::Object::New(env);
        o.Set("state", s.state >= 0 && s.state < 8 ? names[s.state] : "nostate");
        o.Set("reason", s.reason);
        return o;
      });
}

Napi::Value Connection::Versions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct V {
    std::string lib, type, hv;
  };
  return Submit<V>(
      env, "", [](virConnectPtr c) {
        V v;
        unsigned long lib = 0, hv = 0;
        if (virConnectGetLibVersion(c, &lib) < 0) ThrowLastError("cannot read the libvirt version");
        const char* type = virConnectGetType(c);
        if (type == nullptr) ThrowLastError("cannot read the hypervisor type");
        if (virConnectGetVersion(c, &hv) < 0) ThrowLastError("cannot read the hypervisor version");
        v.lib = VersionString(lib);
        v.type = type;
        v.hv = VersionString(hv);
        return v;
      },
      [](Napi::Env env, V& v) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("libvirt", v.lib);
        o.Set("hypervisorType", v.type);
        o.Set("hypervisor", v.hv);
        return o;
      });
}

}  // namespace bca
