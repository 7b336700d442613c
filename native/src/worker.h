// Per-connection call threads. Every libvirt call of a connection runs on that connection's
// own thread(s), never on libuv's shared pool (journal writes, DNS and TLS use it) and never on
// the JS thread. The number of calls queued or running is capped; a call still queued when its
// deadline passes never runs (the caller was already told it timed out).
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "sink.h"
#include "values.h"

namespace bca {

using Clock = std::chrono::steady_clock;

// One call: Run() on a connection thread, then Deliver() on the JS thread (via the Sink).
class Task : public Message {
 public:
  Clock::time_point deadline = Clock::time_point::max();
  // Connection thread. `conn` is a counted reference owned by the caller for the call's length.
  virtual void Run(virConnectPtr conn) = 0;
  // Settles without running (closed, expired).
  virtual void Fail(VirError e) = 0;
};

// A call settling a Promise with a typed result. work and its captures are destroyed on the
// connection thread right after the call, so no libvirt object is released on the JS thread.
template <typename R>
class Call : public Task {
 public:
  using Work = std::function<R(virConnectPtr)>;
  using Convert = std::function<Napi::Value(Napi::Env, R&)>;

  // JS thread. The Promise is returned through *promise.
  Call(Napi::Env env, Work work, Convert convert, Napi::Value* promise)
      : deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), convert_(std::move(convert)) {
    *promise = deferred_.Promise();
  }

  void Run(virConnectPtr conn) override {
    try {
      result_.emplace(work_(conn));
    } catch (const VirFailure& f) {
      failure_ = f.error;
    } catch (const std::exception& e) {
      failure_ = VirError{VIR_ERR_INTERNAL_ERROR, VIR_FROM_NONE, e.what(), ""};
    }
    work_ = nullptr;
  }

  void Fail(VirError e) override {
    failure_ = std::move(e);
    work_ = nullptr;
  }

  // Runs if the call is freed without being delivered (its environment ended first) and it had
  // succeeded: lets open() close a connection nobody will ever see.
  void OnUndelivered(std::function<void()> fn) { undelivered_ = std::move(fn); }
  ~Call() override {
    if (!delivered_ && result_ && undelivered_) undelivered_();
  }

  void Deliver(Napi::Env env) override {
    delivered_ = true;
    if (failure_) {
      deferred_.Reject(failure_->ToJs(env).Value());
      return;
    }
    try {
      deferred_.Resolve(convert_(env, *result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  Convert convert_;
  std::optional<R> result_;
  std::optional<VirError> failure_;
  std::function<void()> undelivered_;
  bool delivered_ = false;
};

// For calls whose only result is success.
struct Done {};
inline Napi::Value DoneToUndefined(Napi::Env env, Done&) { return env.Undefined(); }

class Worker : public std::enable_shared_from_this<Worker> {
 public:
  enum class Admit { Ok, Busy, Closed };

  Worker(std::shared_ptr<Sink> sink, unsigned threads, size_t maxPending)
      : sink_(std::move(sink)), maxThreads_(threads == 0 ? 1 : threads), maxPending_(maxPending == 0 ? 1 : maxPending) {}

  // Any thread. The connection the calls run on (set by the open call, on a connection thread).
  void SetConnection(virConnectPtr c);
  // JS thread. Ok: the task was taken and will run (or fail) and be delivered through the sink;
  // otherwise it stays with the caller.
  Admit Submit(std::unique_ptr<Task>& t);
  // Any thread, once: queued calls fail as closed; `closer` runs next (with the connection) and
  // is delivered; the threads then end and release the sink. False (closer untouched) if the
  // close had already begun.
  bool BeginClose(std::unique_ptr<Task>& closer);
  bool Closing();
  // Calls queued or running, including ones whose caller gave up waiting.
  size_t Pending();
  const std::shared_ptr<Sink>& sink() const { return sink_; }

 private:
  void Loop();
  void StartThreadLocked();

  std::shared_ptr<Sink> sink_;
  const unsigned maxThreads_;
  const size_t maxPending_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Task>> queue_;
  std::unique_ptr<Task> closer_;
  virConnectPtr conn_ = nullptr;
  unsigned threads_ = 0;
  unsigned idle_ = 0;
  size_t pending_ = 0;
  bool closing_ = false;
};

}  // namespace bca
