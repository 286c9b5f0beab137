// TimerQueue: one thread sleeping until the earliest timer is due.
#include "server/drivers/timer_queue.h"

#include "absl/time/clock.h"

namespace connbroker::server {

TimerQueue::TimerQueue() : thread_([this] { Loop(); }) {}

TimerQueue::~TimerQueue() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

TimerQueue& TimerQueue::Shared() {
  static TimerQueue* const queue = new TimerQueue();
  return *queue;
}

TimerQueue::Id TimerQueue::Schedule(absl::Time when,
                                    std::function<void()> callback) {
  absl::MutexLock lock(&mu_);
  const Id id = next_id_++;
  timers_.emplace(std::make_pair(when, id), std::move(callback));
  when_of_.emplace(id, when);
  return id;
}

void TimerQueue::Cancel(Id id) {
  std::function<void()> dropped;  // destroyed outside the lock
  absl::MutexLock lock(&mu_);
  auto it = when_of_.find(id);
  if (it == when_of_.end()) return;
  auto timer = timers_.find(std::make_pair(it->second, id));
  dropped = std::move(timer->second);
  timers_.erase(timer);
  when_of_.erase(it);
}

bool TimerQueue::HasWork() const {
  return stopping_ ||
         (!timers_.empty() && timers_.begin()->first.first <= absl::Now());
}

bool TimerQueue::Woken() const {
  return stopping_ ||
         (!timers_.empty() && timers_.begin()->first.first < sleeping_until_);
}

void TimerQueue::Loop() {
  while (true) {
    std::function<void()> due;
    {
      absl::MutexLock lock(&mu_);
      // Sleep until the earliest timer; a Schedule() of an earlier one
      // ends the sleep (the condition is checked whenever mu_ is released).
      while (!HasWork()) {
        sleeping_until_ = timers_.empty() ? absl::Now() + absl::Seconds(1)
                                          : timers_.begin()->first.first;
        mu_.AwaitWithDeadline(absl::Condition(this, &TimerQueue::Woken),
                              sleeping_until_);
      }
      if (stopping_) return;
      auto first = timers_.begin();
      due = std::move(first->second);
      when_of_.erase(first->first.second);
      timers_.erase(first);
    }
    due();
  }
}

}  // namespace connbroker::server
