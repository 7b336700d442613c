// The domain-job calls of a push-mode backup: begin (with the checkpoint created at the same
// moment), its XML, the domain job's stats (live, or the completed job's, kept for later
// readers) and its abort; and the checkpoints (dirty bitmaps) incrementals are taken against.
// Each runs on the domain's lane like every call that waits on the domain's job.
#include <libvirt/virterror.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "connection.h"
#include "dom.h"
#include "typed_params.h"
#include "values.h"

namespace bca {

namespace {

const char* JobTypeName(int t) {
  switch (t) {
    case VIR_DOMAIN_JOB_NONE: return "none";
    case VIR_DOMAIN_JOB_BOUNDED: return "bounded";
    case VIR_DOMAIN_JOB_UNBOUNDED: return "unbounded";
    case VIR_DOMAIN_JOB_COMPLETED: return "completed";
    case VIR_DOMAIN_JOB_FAILED: return "failed";
    case VIR_DOMAIN_JOB_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

struct JobStats {
  int type = 0;
  TypedValues params;
};

struct CheckpointInfo {
  std::string name;
  std::optional<std::string> parent;
  std::string xml;
};

// Owns one checkpoint handle.
struct Checkpoint {
  virDomainCheckpointPtr p = nullptr;
  explicit Checkpoint(virDomainCheckpointPtr c) : p(c) {}
  ~Checkpoint() {
    if (p != nullptr) virDomainCheckpointFree(p);
  }
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;
};

CheckpointInfo CheckpointInfoOf(virDomainCheckpointPtr c) {
  CheckpointInfo info;
  const char* name = virDomainCheckpointGetName(c);
  if (name == nullptr) ThrowLastError("cannot read the checkpoint's name");
  info.name = name;
  virDomainCheckpointPtr parent = virDomainCheckpointGetParent(c, 0);
  if (parent != nullptr) {
    Checkpoint owned(parent);
    const char* pn = virDomainCheckpointGetName(parent);
    if (pn != nullptr) info.parent = std::string(pn);
  } else {
    // No parent is VIR_ERR_NO_DOMAIN_CHECKPOINT; anything else is a real failure.
    virErrorPtr e = virGetLastError();
    if (e != nullptr && e->code != VIR_ERR_NO_DOMAIN_CHECKPOINT) ThrowLastError("cannot read the checkpoint's parent");
    virResetLastError();
  }
  char* xml = virDomainCheckpointGetXMLDesc(c, VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN);
  if (xml == nullptr) ThrowLastError("cannot read the checkpoint's XML");
  info.xml = xml;
  free(xml);
  return info;
}

}  // namespace

// backupBegin(domain, backupXml, checkpointXml | null, {reuseExternal}): starts the push-mode
// backup job; QEMU writes the point-in-time image of this moment while the guest runs.
Napi::Value Connection::BackupBegin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string xml = StringArg(info, 1, "backupXml");
  std::optional<std::string> checkpoint;
  if (info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull()) checkpoint = StringArg(info, 2, "checkpointXml");
  Napi::Object opts = OptionsArg(info, 3);
  unsigned int flags = 0;
  if (BoolOption(opts, "reuseExternal")) flags |= VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL;
  return Submit<Done>(
      env, key, [key, xml, checkpoint, flags](virConnectPtr c) {
        Dom d(c, key);
        if (virDomainBackupBegin(d, xml.c_str(), checkpoint ? checkpoint->c_str() : nullptr, flags) < 0) {
          ThrowLastError("backup begin failed");
        }
        return Done{};
      },
      DoneToUndefined);
}

// The running backup job's XML (virDomainBackupGetXMLDesc): its mode, disks and targets.
Napi::Value Connection::BackupGetXmlDesc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  return Submit<std::string>(
      env, key, [key](virConnectPtr c) {
        Dom d(c, key);
        char* xml = virDomainBackupGetXMLDesc(d, 0);
        if (xml == nullptr) ThrowLastError("cannot read the backup job's XML");
        std::string s(xml);
        free(xml);
        return s;
      },
      [](Napi::Env env, std::string& s) -> Napi::Value { return Napi::String::New(env, s); });
}

// virDomainAbortJob: aborts the domain's current async job (whatever it is: callers check).
Napi::Value Connection::AbortJob(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  return Submit<Done>(
      env, key, [key](virConnectPtr c) {
        Dom d(c, key);
        if (virDomainAbortJob(d) < 0) ThrowLastError("cannot abort the domain's job");
        return Done{};
      },
      DoneToUndefined);
}

// getJobStats(domain, {completed, keepCompleted}) -> {type, stats}: the current job's stats, or
// with completed those of the last completed job; keepCompleted leaves them for later readers.
Napi::Value Connection::GetJobStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  Napi::Object opts = OptionsArg(info, 1);
  unsigned int flags = 0;
  if (BoolOption(opts, "completed")) flags |= VIR_DOMAIN_JOB_STATS_COMPLETED;
  if (BoolOption(opts, "keepCompleted")) flags |= VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED;
  return Submit<JobStats>(
      env, key, [key, flags](virConnectPtr c) {
        Dom d(c, key);
        JobStats s;
        virTypedParameterPtr params = nullptr;
        int n = 0;
        if (virDomainGetJobStats(d, &s.type, &params, &n, flags) < 0) ThrowLastError("cannot read the domain's job stats");
        s.params = CopyTypedParams(params, n);
        virTypedParamsFree(params, n);
        return s;
      },
      [](Napi::Env env, JobStats& s) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", JobTypeName(s.type));
        o.Set("stats", TypedValuesToJs(env, s.params));
        return o;
      });
}

// Every checkpoint of the domain, parents before children: name, parent name (null for a
// root) and its XML without the <domain> element (creation time, disks and bitmaps).
Napi::Value Connection::ListCheckpoints(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  return Submit<std::vector<CheckpointInfo>>(
      env, key, [key](virConnectPtr c) {
        Dom d(c, key);
        virDomainCheckpointPtr* list = nullptr;
        int n = virDomainListAllCheckpoints(d, &list, VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL);
        if (n < 0) ThrowLastError("cannot list the domain's checkpoints");
        std::vector<CheckpointInfo> out;
        std::optional<VirFailure> failed;
        for (int k = 0; k < n; k++) {
          if (!failed) {
            try {
              out.push_back(CheckpointInfoOf(list[k]));
            } catch (const VirFailure& f) {
              // One deleted while listing is simply no longer there.
              if (f.error.code != VIR_ERR_NO_DOMAIN_CHECKPOINT) failed = f;
            }
          }
          virDomainCheckpointFree(list[k]);
        }
        free(list);
        if (failed) throw *failed;
        return out;
      },
      [](Napi::Env env, std::vector<CheckpointInfo>& list) -> Napi::Value {
        Napi::Array a = Napi::Array::New(env, list.size());
        for (size_t k = 0; k < list.size(); k++) {
          Napi::Object o = Napi::Object::New(env);
          o.Set("name", list[k].name);
          o.Set("parent", list[k].parent ? Napi::Value(Napi::String::New(env, *list[k].parent)) : env.Null());
          o.Set("xml", list[k].xml);
          a.Set(static_cast<uint32_t>(k), o);
        }
        return a;
      });
}

// checkpointDelete(domain, name, {metadataOnly}): removes one checkpoint (and, unless
// metadataOnly, its bitmaps; libvirt merges them into the parent's so later ones stay valid).
Napi::Value Connection::CheckpointDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = StringArg(info, 0, "domain");
  std::string name = StringArg(info, 1, "checkpoint");
  Napi::Object opts = OptionsArg(info, 2);
  unsigned int flags = 0;
  if (BoolOption(opts, "metadataOnly")) flags |= VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY;
  return Submit<Done>(
      env, key, [key, name, flags](virConnectPtr c) {
        Dom d(c, key);
        virDomainCheckpointPtr cp = virDomainCheckpointLookupByName(d, name.c_str(), 0);
        if (cp == nullptr) ThrowLastError("checkpoint not found");
        Checkpoint owned(cp);
        if (virDomainCheckpointDelete(cp, flags) < 0) ThrowLastError("cannot delete the checkpoint");
        return Done{};
      },
      DoneToUndefined);
}

}  // namespace bca
