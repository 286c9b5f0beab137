// TimerQueue: runs callbacks at given times on one thread of its own.
//
// The backend pools use it for acquire timeouts: a call waiting for a
// backend holds no thread, so something must wake it when its time is up.
// Callbacks must be quick and must not block (they run one after another).
// A cancelled timer may still fire if it was already due; callers make their
// callbacks idempotent. Thread-safe.
#ifndef CONNBROKER_SERVER_DRIVERS_TIMER_QUEUE_H_
#define CONNBROKER_SERVER_DRIVERS_TIMER_QUEUE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace connbroker::server {

class TimerQueue {
 public:
  using Id = uint64_t;

  TimerQueue();
  ~TimerQueue();  // drops pending timers and joins the thread
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // The process-wide queue, started on first use and never destroyed.
  static TimerQueue& Shared();

  // Runs `callback` at `when` (at once if it is past).
  Id Schedule(absl::Time when, std::function<void()> callback);

  // Drops the timer if it has not fired yet.
  void Cancel(Id id);

 private:
  void Loop();
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Woken() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // (when, id) -> callback: ordered by time, ties by arrival.
  std::map<std::pair<absl::Time, Id>, std::function<void()>> timers_
      ABSL_GUARDED_BY(mu_);
  std::map<Id, absl::Time> when_of_ ABSL_GUARDED_BY(mu_);
  Id next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time sleeping_until_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_TIMER_QUEUE_H_
