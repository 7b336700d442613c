// Delivery from any thread (libvirt's event loop, a connection's call threads) to the JS thread.
//
// Node deletes every thread-safe function when its environment shuts down (process exit, worker
// exit), while libvirt's threads live on. So no thread ever touches a TSFN directly: it goes
// through a Sink whose `alive` flag is cleared, under the Sink's mutex, by the environment's
// cleanup hook and by the TSFN's own finalizer, and by the first napi_closing answer.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <vector>

namespace bca {

// One item for the JS thread. Owned by a unique_ptr at every step: freed after delivery, when
// delivery throws, when the sink is gone, and when Node drains the queue at teardown.
struct Message {
  virtual ~Message() = default;
  virtual void Deliver(Napi::Env env) = 0;
};

class Sink;

// Per-environment state (instance data): the shutdown flag and every live Sink of this env.
class EnvState {
 public:
  static std::shared_ptr<EnvState> Of(Napi::Env env);
  static std::shared_ptr<EnvState> Install(Napi::Env env);
  bool ShuttingDown();
  void Add(const std::shared_ptr<Sink>& s);
  // Bounds the connections being opened at once (each holds a thread while libvirtd is silent).
  bool BeginOpen();
  void EndOpen();
  static constexpr int kMaxOpening = 8;

 private:
  static void Cleanup(void* arg);
  std::mutex m_;
  bool shuttingDown_ = false;
  int opening_ = 0;
  std::vector<std::weak_ptr<Sink>> sinks_;
};

class Sink {
 public:
  // JS thread. Starts unreferenced: it keeps the process alive only while Ref()'d.
  static std::shared_ptr<Sink> New(Napi::Env env, const char* name);
  ~Sink() = default;

  // Any thread. Never blocks; false (and the message freed) once the sink is gone.
  bool Post(std::unique_ptr<Message> m);
  // JS thread: keep the event loop alive while something waits on this sink.
  void Ref(Napi::Env env);
  void Unref(Napi::Env env);
  // Any thread, idempotent: no more posts; items already queued are still delivered.
  void Release();
  // Cleanup hook / finalizer: the TSFN is being deleted by Node; never call it again.
  void MarkDead();
  bool Alive();

 private:
  Sink() = default;
  static void CallJs(napi_env env, napi_value, void*, void* data);
  static void Finalize(napi_env, void* data, void*);

  std::mutex m_;
  bool alive_ = false;
  napi_threadsafe_function tsfn_ = nullptr;
};

}  // namespace bca
