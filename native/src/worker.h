// Per-connection call threads. Every libvirt call of a connection runs on that connection's
// own threads, never on libuv's shared pool (journal writes, DNS and TLS use it) and never on
// the JS thread. The number of calls queued or running is capped; a call still queued when its
// queue bound passes never runs (the caller was told it was busy).
#pragma once

#include <napi.h>
#include <libvirt/libvirt.h>

#include <chrono>
#include <condition_variable>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "events.h"
#include "sink.h"
#include "values.h"

namespace bca {

using Clock = std::chrono::steady_clock;

// One call: Run() on a connection thread, then Deliver() on the JS thread (via the Sink).
class Task : public Message {
 public:
  // The queue bound: a call not handed to a thread by then never runs (it fails as busy).
  Clock::time_point deadline = Clock::time_point::max();
  Clock::time_point queuedAt = Clock::now();
  uint64_t id = 0;
  // The domain key the call waits on ("" = none: the connection's main lane).
  std::string domain;
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

// Why a call that never left the queue failed: it waited behind calls on its domain (or on the
// connection, for one naming no domain) that libvirtd has not answered. Reason "queued" (the facade's LibvirtBusy, queued).
VirError QueuedTooLong(const Task& t);

// For calls whose only result is success.
struct Done {};
inline Napi::Value DoneToUndefined(Napi::Env env, Done&) { return env.Undefined(); }

// The call threads of one connection (see docs/libvirt-binding.md, "Threads"):
//  - the main lane: one thread on the connection open() made; it runs the open, the calls that
//    name no domain (listDomains, versions, event (de)registration) and the close, in order;
//  - up to maxLanes domain lanes: each a thread with its OWN libvirt connection (opened on its
//    first call, same URI and keepalive, its close callback reported like the main one's). A
//    lane takes the oldest runnable domain's next call; a domain is runnable while it has
//    queued calls and none running, so one domain never holds more than one lane and a call
//    that waits on one guest's QEMU monitor delays no other domain's calls.
// Never two threads on one libvirt connection: libvirt 9.0's remote client crashes (SIGSEGV in
// its I/O loop) when keepalive drops a connection that two threads are waiting on and the
// daemon then answers. One thread per connection makes that state unreachable.
class Worker : public std::enable_shared_from_this<Worker> {
 public:
  enum class Admit { Ok, Busy, Closed };
  // Opens one domain lane's connection on that lane's thread; throws VirFailure. The returned
  // Registrations watch its close (the lane clears them before it closes the connection).
  using LaneOpen = std::function<std::pair<virConnectPtr, std::shared_ptr<Registrations>>()>;

  Worker(std::shared_ptr<Sink> sink, unsigned maxLanes, size_t maxPending)
      : sink_(std::move(sink)), maxLanes_(maxLanes), maxPending_(maxPending == 0 ? 1 : maxPending) {}

  // Any thread. The connection the main lane runs on (set by the open call, on that lane).
  void SetConnection(virConnectPtr c);
  // Before the first Submit: how a domain lane opens its connection (without one, domain calls
  // run on the main lane).
  void SetLaneOpen(LaneOpen open) { laneOpen_ = std::move(open); }
  uint64_t NewId() { return nextId_.fetch_add(1) + 1; }
  // JS thread. Ok: the task was taken and will run (or fail) and be delivered through the sink;
  // otherwise it stays with the caller. t->domain picks the lane ("" = the main lane).
  Admit Submit(std::unique_ptr<Task>& t);
  // JS thread. >= 0: ms since the call was handed to a thread; -1: still queued; -2: done.
  double CallState(uint64_t id);
  // JS thread. The call if it was still queued (it will never run; the caller settles it).
  std::unique_ptr<Task> TakeQueued(uint64_t id);
  // Any thread, once: queued calls fail as closed; `closer` runs next on the main lane (with
  // the connection) and is delivered; the threads then end and release the sink. False
  // (closer untouched) if the close had already begun.
  bool BeginClose(std::unique_ptr<Task>& closer);
  bool Closing();
  // Calls queued or running, including ones whose caller gave up waiting.
  size_t Pending();
  const std::shared_ptr<Sink>& sink() const { return sink_; }

 private:
  void MainLoop();
  void LaneLoop();
  void StartLocked(bool lane);
  // With m_ held: true if the call may run (else it was failed for its expired queue bound).
  bool StartingLocked(Task& t);
  void EndThread(std::unique_lock<std::mutex>& lock);

  std::shared_ptr<Sink> sink_;
  const unsigned maxLanes_;
  const size_t maxPending_;
  LaneOpen laneOpen_;
  std::atomic<uint64_t> nextId_{0};
  std::mutex m_;
  std::condition_variable mainCv_, laneCv_;
  std::deque<std::unique_ptr<Task>> main_;
  std::unordered_map<std::string, std::deque<std::unique_ptr<Task>>> domains_;
  std::deque<std::string> runnable_;       // domains with queued calls and none running
  std::unordered_set<std::string> running_;  // domains with a call on a lane
  std::unordered_map<uint64_t, std::string> queued_;  // call id -> its domain ("" = main)
  std::unordered_map<uint64_t, Clock::time_point> started_;
  std::unique_ptr<Task> closer_;
  virConnectPtr conn_ = nullptr;
  bool mainStarted_ = false;
  unsigned threads_ = 0, lanes_ = 0, idleLanes_ = 0;
  size_t pending_ = 0;
  bool closing_ = false;
};

}  // namespace bca
