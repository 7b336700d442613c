// A libvirt connection as a JS object. Every libvirt call runs on the connection's own call
// threads (worker.h) and settles a Promise; the JS thread never waits on libvirt, not even to
// close, finalize or (de)register events.
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

#include <cstdint>
#include <memory>

#include "events.h"
#include "sink.h"
#include "worker.h"

namespace bca {

class Connection : public Napi::ObjectWrap<Connection> {
 public:
  static Napi::Function Define(Napi::Env env);
  // open(uri, {keepaliveInterval, keepaliveCount, callTimeoutMs, maxPendingCalls,
  //             queueTimeoutMs, domainThreads})
  //   -> Promise<Connection>
  static Napi::Value Open(const Napi::CallbackInfo& info);

  explicit Connection(const Napi::CallbackInfo& info);
  ~Connection() override;

  // What open() hands the constructor, inside a type-tagged External.
  struct Parts {
    std::shared_ptr<Worker> worker;
    std::shared_ptr<Registrations> regs;
    std::shared_ptr<JsSide> js;
    std::shared_ptr<EnvState> envState;
    uint32_t timeoutMs = 0;
    uint32_t queueTimeoutMs = 0;
    bool taken = false;
  };

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value IsClosed(const Napi::CallbackInfo& info);
  Napi::Value SetHandlers(const Napi::CallbackInfo& info);
  Napi::Value PendingCalls(const Napi::CallbackInfo& info);
  Napi::Value CallState(const Napi::CallbackInfo& info);
  Napi::Value CancelQueued(const Napi::CallbackInfo& info);
  Napi::Value LookupDomain(const Napi::CallbackInfo& info);
  Napi::Value ListDomains(const Napi::CallbackInfo& info);
  Napi::Value GetXml(const Napi::CallbackInfo& info);
  Napi::Value StorageVolPath(const Napi::CallbackInfo& info);
  Napi::Value StoragePoolXml(const Napi::CallbackInfo& info);
  Napi::Value StoragePoolRefresh(const Napi::CallbackInfo& info);
  Napi::Value BlockCopy(const Napi::CallbackInfo& info);
  // chain.cc
  Napi::Value SnapshotCreateXml(const Napi::CallbackInfo& info);
  Napi::Value BlockCommit(const Napi::CallbackInfo& info);
  Napi::Value BlockPull(const Napi::CallbackInfo& info);
  // backup.cc
  Napi::Value BackupBegin(const Napi::CallbackInfo& info);
  Napi::Value BackupGetXmlDesc(const Napi::CallbackInfo& info);
  Napi::Value AbortJob(const Napi::CallbackInfo& info);
  Napi::Value GetJobStats(const Napi::CallbackInfo& info);
  Napi::Value ListCheckpoints(const Napi::CallbackInfo& info);
  Napi::Value CheckpointDelete(const Napi::CallbackInfo& info);
  Napi::Value GetBlockJobInfo(const Napi::CallbackInfo& info);
  Napi::Value GetBlockInfo(const Napi::CallbackInfo& info);
  Napi::Value BlockJobAbort(const Napi::CallbackInfo& info);
  Napi::Value BlockJobSetSpeed(const Napi::CallbackInfo& info);
  Napi::Value Versions(const Napi::CallbackInfo& info);
  Napi::Value Suspend(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value FsFreeze(const Napi::CallbackInfo& info);
  Napi::Value FsThaw(const Napi::CallbackInfo& info);
  Napi::Value GetState(const Napi::CallbackInfo& info);
  Napi::Value DomainCall(const Napi::CallbackInfo& info, int (*fn)(virDomainPtr), const char* what);
  Napi::Value SubscribeEvents(const Napi::CallbackInfo& info);
  Napi::Value UnsubscribeEvents(const Napi::CallbackInfo& info);

  // Queues one call; a full queue or a closed connection rejects at once. `domain` is the key
  // of the domain the call waits on ("" for none): calls on one domain run one at a time, in
  // order, and never wait for calls on other domains (worker.h).
  template <typename R>
  Napi::Value Submit(Napi::Env env, const std::string& domain, typename Call<R>::Work work,
                     typename Call<R>::Convert convert) {
    if (closed_) return RejectClosed(env);
    Napi::Value promise;
    std::unique_ptr<Task> call = std::make_unique<Call<R>>(env, std::move(work), std::move(convert), &promise);
    call->domain = domain;
    return Enqueue(env, std::move(call), promise);
  }
  Napi::Value RejectClosed(Napi::Env env);
  Napi::Value Enqueue(Napi::Env env, std::unique_ptr<Task> call, Napi::Value promise);

  Parts p_;
  bool closed_ = false;
};

}  // namespace bca
