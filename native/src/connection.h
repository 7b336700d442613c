// A libvirt connection as a JS object. Every blocking call runs on the libuv pool and
// returns a Promise; in-flight calls hold their own reference, so close() never frees a
// connection under a running call.
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

#include <map>
#include <memory>

#include "events.h"

namespace bca {

using ConnPtr = std::shared_ptr<virConnect>;

class Connection : public Napi::ObjectWrap<Connection> {
 public:
  static Napi::Function Define(Napi::Env env);
  // open(uri, {keepaliveInterval, keepaliveCount}, onClose?) -> Promise<Connection>
  static Napi::Value Open(const Napi::CallbackInfo& info);

  explicit Connection(const Napi::CallbackInfo& info);
  ~Connection() override;

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value IsClosed(const Napi::CallbackInfo& info);
  Napi::Value LookupDomain(const Napi::CallbackInfo& info);
  Napi::Value ListDomains(const Napi::CallbackInfo& info);
  Napi::Value GetXml(const Napi::CallbackInfo& info);
  Napi::Value GetMetadata(const Napi::CallbackInfo& info);
  Napi::Value SetMetadata(const Napi::CallbackInfo& info);
  Napi::Value BlockCopy(const Napi::CallbackInfo& info);
  Napi::Value GetBlockJobInfo(const Napi::CallbackInfo& info);
  Napi::Value BlockJobAbort(const Napi::CallbackInfo& info);
  Napi::Value BlockJobSetSpeed(const Napi::CallbackInfo& info);
  Napi::Value Versions(const Napi::CallbackInfo& info);
  Napi::Value Suspend(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value FsFreeze(const Napi::CallbackInfo& info);
  Napi::Value FsThaw(const Napi::CallbackInfo& info);
  Napi::Value DomainCall(const Napi::CallbackInfo& info, int (*fn)(virDomainPtr), const char* what);
  Napi::Value SubscribeEvents(const Napi::CallbackInfo& info);
  Napi::Value UnsubscribeEvents(const Napi::CallbackInfo& info);

  // A counted reference for one call; throws (as a rejected Promise) once closed.
  ConnPtr Ref(Napi::Env env);
  void CloseNow();

  virConnectPtr conn_ = nullptr;
  bool hasCloseCallback_ = false;
  int nextSubscription_ = 1;
  std::map<int, EventSubscription> subscriptions_;
};

}  // namespace bca
