// The calls that shape a disk's backing chain: an external disk-only snapshot (a new overlay on
// top), a commit (layers merged down) and a pull (layers merged up). Each runs on the domain's
// lane like blockCopy, so it never overtakes or waits behind another domain's calls.
#include <climits>
#include <optional>
#include <string>

#include "connection.h"
#include "dom.h"
#include "values.h"

namespace bca {

namespace {

// An optional string option: absent/undefined/null = libvirt's default (nullptr).
std::optional<std::string> OptStringOption(const Napi::Object& opts, const char* name) {
  Napi::Value v = opts.Get(name);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  if (!v.IsString()) throw Napi::TypeError::New(opts.Env(), std::string(name) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty()) throw Napi::TypeError::New(opts.Env(), std::string(name) + " must not be empty");
  if (s.find('\0') != std::string::npos) {
    throw Napi::TypeError::New(opts.Env(), std::string(name) + " must not contain NUL characters");
  }
  return s;
}

// bytes/s, as libvirt's unsigned long bandwidth argument (0 = unlimited).
unsigned long BandwidthOption(const Napi::Object& opts) {
  uint64_t bw = U64Option(opts, "bandwidth", 0);
  if (bw > ULONG_MAX) throw Napi::TypeError::New(opts.Env(), "bandwidth does not fit an unsigned long");
  return static_cast<unsigned long>(bw);
}

const char* OrNull(const std::optional<std::string>& s) { return s ? s->c_str() : nullptr; }

}  // namespace

Napi::Value Connection::SnapshotCreateXml(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string xml = StringArg(info, 1, "snapshotXml");
  Napi::Object opts = OptionsArg(info, 2);
  unsigned int flags = 0;
  if (BoolOption(opts, "diskOnly")) flags |= VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY;
  if (BoolOption(opts, "noMetadata")) flags |= VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA;
  if (BoolOption(opts, "atomic")) flags |= VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
  if (BoolOption(opts, "quiesce")) flags |= VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE;
  if (BoolOption(opts, "reuseExternal")) flags |= VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT;
  return Submit<std::string>(
      env, key, [key, xml, flags](virConnectPtr c) {
        Dom d(c, key);
        virDomainSnapshotPtr snap = virDomainSnapshotCreateXML(d, xml.c_str(), flags);
        if (snap == nullptr) ThrowLastError("snapshot creation failed");
        const char* name = virDomainSnapshotGetName(snap);
        std::string s = name != nullptr ? name : "";
        virDomainSnapshotFree(snap);
        virResetLastError();
        return s;
      },
      [](Napi::Env env, std::string& s) -> Napi::Value { return Napi::String::New(env, s); });
}

Napi::Value Connection::BlockCommit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  Napi::Object opts = OptionsArg(info, 2);
  std::optional<std::string> base = OptStringOption(opts, "base");
  std::optional<std::string> top = OptStringOption(opts, "top");
  unsigned long bandwidth = BandwidthOption(opts);
  // Never VIR_DOMAIN_BLOCK_COMMIT_DELETE: the agent removes merged layers itself, by policy.
  unsigned int flags = VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES;
  if (BoolOption(opts, "shallow")) flags |= VIR_DOMAIN_BLOCK_COMMIT_SHALLOW;
  if (BoolOption(opts, "active")) flags |= VIR_DOMAIN_BLOCK_COMMIT_ACTIVE;
  if (BoolOption(opts, "relative")) flags |= VIR_DOMAIN_BLOCK_COMMIT_RELATIVE;
  return Submit<Done>(
      env, key, [key, disk, base, top, bandwidth, flags](virConnectPtr c) {
        Dom d(c, key);
        if (virDomainBlockCommit(d, disk.c_str(), OrNull(base), OrNull(top), bandwidth, flags) < 0) {
          ThrowLastError("block commit failed");
        }
        return Done{};
      },
      DoneToUndefined);
}

Napi::Value Connection::BlockPull(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string disk = StringArg(info, 1, "disk");
  Napi::Object opts = OptionsArg(info, 2);
  std::optional<std::string> base = OptStringOption(opts, "base");
  unsigned long bandwidth = BandwidthOption(opts);
  // A rebase without VIR_DOMAIN_BLOCK_REBASE_COPY is a pull: base null pulls the whole chain.
  unsigned int flags = VIR_DOMAIN_BLOCK_REBASE_BANDWIDTH_BYTES;
  return Submit<Done>(
      env, key, [key, disk, base, bandwidth, flags](virConnectPtr c) {
        Dom d(c, key);
        if (virDomainBlockRebase(d, disk.c_str(), OrNull(base), bandwidth, flags) < 0) {
          ThrowLastError("block pull failed");
        }
        return Done{};
      },
      DoneToUndefined);
}

}  // namespace bca
