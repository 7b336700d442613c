#include "worker.h"

#include <thread>

namespace bca {

void Worker::SetConnection(virConnectPtr c) {
  std::lock_guard<std::mutex> lock(m_);
  conn_ = c;
}

Worker::Admit Worker::Submit(std::unique_ptr<Task>& t) {
  std::lock_guard<std::mutex> lock(m_);
  if (closing_) return Admit::Closed;
  if (pending_ >= maxPending_) return Admit::Busy;
  pending_++;
  queue_.push_back(std::move(t));
  if (idle_ == 0 && threads_ < maxThreads_) StartThreadLocked();
  cv_.notify_one();
  return Admit::Ok;
}

bool Worker::BeginClose(std::unique_ptr<Task>& closer) {
  std::deque<std::unique_ptr<Task>> dropped;
  {
    std::lock_guard<std::mutex> lock(m_);
    if (closing_) return false;
    closing_ = true;
    dropped.swap(queue_);
    pending_ -= dropped.size();
    closer_ = std::move(closer);
    if (threads_ == 0) StartThreadLocked();
    cv_.notify_all();
  }
  for (auto& t : dropped) {
    t->Fail(VirError{VIR_ERR_INVALID_CONN, VIR_FROM_NONE, "the libvirt connection was closed before the call ran", "closed"});
    sink_->Post(std::move(t));
  }
  return true;
}

bool Worker::Closing() {
  std::lock_guard<std::mutex> lock(m_);
  return closing_;
}

size_t Worker::Pending() {
  std::lock_guard<std::mutex> lock(m_);
  return pending_ + (closer_ ? 1 : 0);
}

void Worker::StartThreadLocked() {
  threads_++;
  // Detached: a thread stuck inside libvirt (libvirtd hung) must never block the JS thread,
  // a close, or process exit. It holds the Worker until it returns.
  std::thread([self = shared_from_this()] { self->Loop(); }).detach();
}

void Worker::Loop() {
  std::unique_lock<std::mutex> lock(m_);
  for (;;) {
    idle_++;
    cv_.wait(lock, [this] { return !queue_.empty() || closer_ || closing_; });
    idle_--;
    std::unique_ptr<Task> t;
    bool isCloser = false;
    if (closer_) {
      // Wait for the other threads' running calls? No: the close holds its own reference and
      // libvirt keeps the connection until the last reference goes.
      t = std::move(closer_);
      isCloser = true;
    } else if (!queue_.empty()) {
      t = std::move(queue_.front());
      queue_.pop_front();
    } else {
      break;  // closing and nothing left
    }
    virConnectPtr c = conn_;
    if (c != nullptr) virConnectRef(c);
    if (isCloser) conn_ = nullptr;  // the closer takes over the Worker's own reference
    lock.unlock();
    if (!isCloser && Clock::now() >= t->deadline) {
      t->Fail(VirError{VIR_ERR_OPERATION_TIMEOUT, VIR_FROM_NONE,
                       "libvirtd did not take the call before its deadline; it was not sent", "timeout"});
    } else {
      t->Run(c);
    }
    // Drop this call's reference here, on this thread: the last one sends the close RPC.
    if (c != nullptr && virConnectClose(c) < 0) virResetLastError();
    if (isCloser && c != nullptr && virConnectClose(c) < 0) virResetLastError();
    sink_->Post(std::move(t));
    lock.lock();
    if (!isCloser) pending_--;
  }
  threads_--;
  bool last = threads_ == 0;
  lock.unlock();
  // Every call that was admitted has been delivered: nothing will post to the sink again.
  if (last) sink_->Release();
}

}  // namespace bca
