// Runs one blocking libvirt call on the libuv thread pool and settles a Promise with its result.
#pragma once

#include <napi.h>

#include <functional>
#include <optional>
#include <utility>

#include "values.h"

namespace bca {

template <typename R>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<R()>;
  using Convert = std::function<Napi::Value(Napi::Env, R&)>;

  static Napi::Promise Start(Napi::Env env, Work work, Convert convert,
                             std::function<void()> cleanup = nullptr) {
    auto* w = new PromiseWorker(env, std::move(work), std::move(convert), std::move(cleanup));
    Napi::Promise promise = w->deferred_.Promise();
    w->Napi::AsyncWorker::Queue();
    return promise;
  }

  ~PromiseWorker() override {
    if (cleanup_) cleanup_();
  }

 protected:
  void Execute() override {
    try {
      result_.emplace(work_());
    } catch (const VirFailure& f) {
      failure_ = f.error;
    } catch (const std::exception& e) {
      failure_ = VirError{VIR_ERR_INTERNAL_ERROR, VIR_FROM_NONE, e.what()};
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
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

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  PromiseWorker(Napi::Env env, Work work, Convert convert, std::function<void()> cleanup)
      : Napi::AsyncWorker(env, "libvirt"),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        convert_(std::move(convert)),
        cleanup_(std::move(cleanup)) {}

  Napi::Promise::Deferred deferred_;
  Work work_;
  Convert convert_;
  std::function<void()> cleanup_;
  std::optional<R> result_;
  std::optional<VirError> failure_;
};

// For calls whose only result is success.
struct Done {};

}  // namespace bca
