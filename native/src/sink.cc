#include "sink.h"

#include <algorithm>

#include "addon.h"

namespace bca {

std::shared_ptr<EnvState> EnvState::Install(Napi::Env env) {
  auto state = std::make_shared<EnvState>();
  // Runs when the environment begins to shut down (process or worker exit), before N-API
  // finalizes the objects; the holder is freed by the hook itself.
  napi_add_env_cleanup_hook(env, Cleanup, new std::shared_ptr<EnvState>(state));
  return state;
}

std::shared_ptr<EnvState> EnvState::Of(Napi::Env env) { return AddonData::Get(env)->state; }

void EnvState::Cleanup(void* arg) {
  std::unique_ptr<std::shared_ptr<EnvState>> holder(static_cast<std::shared_ptr<EnvState>*>(arg));
  EnvState& self = **holder;
  std::vector<std::weak_ptr<Sink>> sinks;
  {
    std::lock_guard<std::mutex> lock(self.m_);
    self.shuttingDown_ = true;
    sinks.swap(self.sinks_);
  }
  for (auto& w : sinks) {
    if (auto s = w.lock()) s->MarkDead();
  }
}

bool EnvState::ShuttingDown() {
  std::lock_guard<std::mutex> lock(m_);
  return shuttingDown_;
}

void EnvState::Add(const std::shared_ptr<Sink>& s) {
  std::lock_guard<std::mutex> lock(m_);
  // Bounded by the live sinks: forget the expired ones as new ones arrive.
  sinks_.erase(std::remove_if(sinks_.begin(), sinks_.end(), [](const std::weak_ptr<Sink>& w) { return w.expired(); }),
               sinks_.end());
  if (shuttingDown_) {
    s->MarkDead();
    return;
  }
  sinks_.push_back(s);
}

bool EnvState::BeginOpen() {
  std::lock_guard<std::mutex> lock(m_);
  if (opening_ >= kMaxOpening) return false;
  opening_++;
  return true;
}

void EnvState::EndOpen() {
  std::lock_guard<std::mutex> lock(m_);
  opening_--;
}

std::shared_ptr<Sink> Sink::New(Napi::Env env, const char* name) {
  std::shared_ptr<Sink> s(new Sink());
  auto* weak = new std::weak_ptr<Sink>(s);
  napi_value resourceName;
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resourceName);
  napi_status st = napi_create_threadsafe_function(env, nullptr, nullptr, resourceName, 0, 1, weak, Finalize,
                                                   nullptr, CallJs, &s->tsfn_);
  if (st != napi_ok) {
    delete weak;
    throw Napi::Error::New(env, "cannot create a thread-safe function");
  }
  s->alive_ = true;
  napi_unref_threadsafe_function(env, s->tsfn_);
  EnvState::Of(env)->Add(s);
  return s;
}

bool Sink::Post(std::unique_ptr<Message> m) {
  std::lock_guard<std::mutex> lock(m_);
  if (!alive_) return false;
  napi_status st = napi_call_threadsafe_function(tsfn_, m.get(), napi_tsfn_nonblocking);
  if (st == napi_ok) {
    m.release();  // the queue owns it now; CallJs takes it back
    return true;
  }
  // napi_closing: the function is on its way out; never use it again.
  if (st == napi_closing) alive_ = false;
  return false;
}

void Sink::Ref(Napi::Env env) {
  std::lock_guard<std::mutex> lock(m_);
  if (alive_) napi_ref_threadsafe_function(env, tsfn_);
}

void Sink::Unref(Napi::Env env) {
  std::lock_guard<std::mutex> lock(m_);
  if (alive_) napi_unref_threadsafe_function(env, tsfn_);
}

void Sink::Release() {
  std::lock_guard<std::mutex> lock(m_);
  if (!alive_) return;
  alive_ = false;
  napi_release_threadsafe_function(tsfn_, napi_tsfn_release);
}

void Sink::MarkDead() {
  std::lock_guard<std::mutex> lock(m_);
  alive_ = false;
}

bool Sink::Alive() {
  std::lock_guard<std::mutex> lock(m_);
  return alive_;
}

void Sink::CallJs(napi_env env, napi_value, void*, void* data) {
  std::unique_ptr<Message> m(static_cast<Message*>(data));
  // A null env: Node is tearing the function down and drains its queue; just free the item.
  if (env == nullptr || m == nullptr) return;
  Napi::Env e(env);
  Napi::HandleScope scope(e);
  try {
    m->Deliver(e);
  } catch (const Napi::Error& err) {
    // Surfaces as an uncaught exception, like a throw from any other callback. While a worker
    // is being terminated JS cannot run at all: then the item is simply dropped.
    napi_throw(env, err.Value());
  } catch (...) {
    // Nothing may escape into Node (it would abort the process).
  }
}

void Sink::Finalize(napi_env, void* data, void*) {
  auto* weak = static_cast<std::weak_ptr<Sink>*>(data);
  if (auto s = weak->lock()) s->MarkDead();
  delete weak;
}

}  // namespace bca
