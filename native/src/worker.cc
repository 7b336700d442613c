#include "worker.h"

#include <libvirt/virterror.h>

#include <algorithm>
#include <thread>

namespace bca {

VirError QueuedTooLong(const Task& t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t.queuedAt).count();
  std::string behind = t.domain.empty() ? "the connection's calls that name no domain"
                                        : "an earlier call on domain " + t.domain;
  return VirError{VIR_ERR_OPERATION_TIMEOUT, VIR_FROM_NONE,
                  "the call waited " + std::to_string(ms) + " ms in the agent's queue behind " + behind +
                      " that libvirtd has not answered yet; it was not sent",
                  "queued"};
}

void Worker::SetConnection(virConnectPtr c) {
  std::lock_guard<std::mutex> lock(m_);
  conn_ = c;
}

Worker::Admit Worker::Submit(std::unique_ptr<Task>& t) {
  std::lock_guard<std::mutex> lock(m_);
  if (closing_) return Admit::Closed;
  if (pending_ >= maxPending_) return Admit::Busy;
  pending_++;
  if (t->domain.empty() || !laneOpen_ || maxLanes_ == 0) t->domain.clear();
  queued_[t->id] = t->domain;
  if (t->domain.empty()) {
    main_.push_back(std::move(t));
    if (!mainStarted_) StartLocked(false);
    mainCv_.notify_one();
    return Admit::Ok;
  }
  const std::string d = t->domain;
  auto& q = domains_[d];
  q.push_back(std::move(t));
  if (q.size() == 1 && running_.count(d) == 0) {
    runnable_.push_back(d);
    // A lane for each runnable domain no idle lane will take, up to the bound.
    if (runnable_.size() > idleLanes_ && lanes_ < maxLanes_) StartLocked(true);
    laneCv_.notify_one();
  }
  return Admit::Ok;
}

double Worker::CallState(uint64_t id) {
  std::lock_guard<std::mutex> lock(m_);
  auto s = started_.find(id);
  if (s != started_.end()) {
    return std::chrono::duration<double, std::milli>(Clock::now() - s->second).count();
  }
  return queued_.count(id) != 0 ? -1 : -2;
}

std::unique_ptr<Task> Worker::TakeQueued(uint64_t id) {
  std::lock_guard<std::mutex> lock(m_);
  auto it = queued_.find(id);
  if (it == queued_.end()) return nullptr;
  const std::string d = it->second;
  std::deque<std::unique_ptr<Task>>* q = &main_;
  auto dq = domains_.end();
  if (!d.empty()) {
    dq = domains_.find(d);
    if (dq == domains_.end()) return nullptr;
    q = &dq->second;
  }
  auto pos = std::find_if(q->begin(), q->end(), [id](const std::unique_ptr<Task>& t) { return t->id == id; });
  if (pos == q->end()) return nullptr;
  std::unique_ptr<Task> t = std::move(*pos);
  q->erase(pos);
  queued_.erase(it);
  pending_--;
  if (!d.empty() && q->empty()) {
    domains_.erase(dq);
    runnable_.erase(std::remove(runnable_.begin(), runnable_.end(), d), runnable_.end());
  }
  return t;
}

bool Worker::BeginClose(std::unique_ptr<Task>& closer) {
  std::deque<std::unique_ptr<Task>> dropped;
  {
    std::lock_guard<std::mutex> lock(m_);
    if (closing_) return false;
    closing_ = true;
    dropped.swap(main_);
    for (auto& [d, q] : domains_) {
      for (auto& t : q) dropped.push_back(std::move(t));
    }
    domains_.clear();
    runnable_.clear();
    queued_.clear();
    pending_ -= dropped.size();
    closer_ = std::move(closer);
    if (!mainStarted_) StartLocked(false);
    mainCv_.notify_all();
    laneCv_.notify_all();
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

void Worker::StartLocked(bool lane) {
  threads_++;
  if (lane) {
    lanes_++;
  } else {
    mainStarted_ = true;
  }
  // Detached: a thread stuck inside libvirt (libvirtd or one guest's QEMU hung) must never
  // block the JS thread, a close, or process exit. It holds the Worker until it returns.
  std::thread([self = shared_from_this(), lane] { lane ? self->LaneLoop() : self->MainLoop(); }).detach();
}

bool Worker::StartingLocked(Task& t) {
  queued_.erase(t.id);
  if (Clock::now() >= t.deadline) {
    t.Fail(QueuedTooLong(t));
    return false;
  }
  started_[t.id] = Clock::now();
  return true;
}

void Worker::EndThread(std::unique_lock<std::mutex>& lock) {
  threads_--;
  bool last = threads_ == 0;
  lock.unlock();
  // Every call that was admitted has been delivered: nothing will post to the sink again.
  if (last) sink_->Release();
}

void Worker::MainLoop() {
  std::unique_lock<std::mutex> lock(m_);
  for (;;) {
    mainCv_.wait(lock, [this] { return !main_.empty() || closer_ || closing_; });
    std::unique_ptr<Task> t;
    bool isCloser = false;
    if (closer_) {
      // Wait for the lanes' running calls? No: each holds its own connection, and libvirt keeps
      // this one until the last reference goes.
      t = std::move(closer_);
      isCloser = true;
    } else if (!main_.empty()) {
      t = std::move(main_.front());
      main_.pop_front();
    } else {
      break;  // closing and nothing left
    }
    bool run = isCloser || StartingLocked(*t);
    virConnectPtr c = conn_;
    if (c != nullptr) virConnectRef(c);
    if (isCloser) conn_ = nullptr;  // the closer takes over the Worker's own reference
    lock.unlock();
    if (run) t->Run(c);
    // Drop this call's reference here, on this thread: the last one sends the close RPC.
    if (c != nullptr && virConnectClose(c) < 0) virResetLastError();
    if (isCloser && c != nullptr && virConnectClose(c) < 0) virResetLastError();
    uint64_t id = t->id;
    sink_->Post(std::move(t));
    lock.lock();
    if (!isCloser) {
      started_.erase(id);
      pending_--;
    }
  }
  EndThread(lock);
}

void Worker::LaneLoop() {
  virConnectPtr c = nullptr;
  std::shared_ptr<Registrations> regs;
  std::unique_lock<std::mutex> lock(m_);
  for (;;) {
    idleLanes_++;
    laneCv_.wait(lock, [this] { return !runnable_.empty() || closing_; });
    idleLanes_--;
    if (runnable_.empty()) break;  // closing: BeginClose dropped every queued call
    const std::string d = runnable_.front();
    runnable_.pop_front();
    auto q = domains_.find(d);
    std::unique_ptr<Task> t = std::move(q->second.front());
    q->second.pop_front();
    if (q->second.empty()) domains_.erase(q);
    running_.insert(d);
    bool run = StartingLocked(*t);
    lock.unlock();
    if (run && c == nullptr) {
      try {
        std::tie(c, regs) = laneOpen_();
      } catch (const VirFailure& f) {
        t->Fail(f.error);
        run = false;
      }
    }
    if (run) {
      virConnectRef(c);
      t->Run(c);
      if (virConnectClose(c) < 0) virResetLastError();
    }
    uint64_t id = t->id;
    sink_->Post(std::move(t));
    lock.lock();
    started_.erase(id);
    pending_--;
    running_.erase(d);
    if (domains_.count(d) != 0) {
      runnable_.push_back(d);  // the domain's next call, behind the domains already waiting
      laneCv_.notify_one();
    }
  }
  lanes_--;
  lock.unlock();
  // Closed on this thread, after its close callback is gone: nothing reports this close.
  if (c != nullptr) {
    regs->Clear(c);
    regs.reset();
    if (virConnectClose(c) < 0) virResetLastError();
  }
  lock.lock();
  EndThread(lock);
}

}  // namespace bca
