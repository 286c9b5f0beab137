// BackendBudget: daemon-wide bounds on backend connections and open files.
//
// Every pool bounds its own backends (pool_size + max_overflow), but a
// daemon serves many connections, and their sum is bounded by nothing else:
// enough of them could open more sessions than the database servers accept
// or more files than the process may hold, and then a client socket cannot
// be accepted. A BackendPool takes one unit of this budget before it opens a
// backend and gives it back when that backend is closed. Two checks, both at
// that moment:
//  - the open backends of every pool together stay within max_backends;
//  - the process keeps at least reserved_files of max_open_files free for
//    client sockets, counted from /proc/self/fd. Counting costs a directory
//    read, which only happens next to a backend open (a network handshake or
//    a file open), never on a query that reuses a backend.
// Past either bound the open is refused with RESOURCE_EXHAUSTED naming the
// bound; backends already open are unaffected. An idle backend of another
// pool is not closed to make room.
//
// Thread-safe.
#ifndef CONNBROKER_SERVER_DRIVERS_BACKEND_BUDGET_H_
#define CONNBROKER_SERVER_DRIVERS_BACKEND_BUDGET_H_

#include <functional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace connbroker::server {

class BackendBudget {
 public:
  struct Limits {
    int max_backends = 128;
    int max_open_files = 4096;
    int reserved_files = 256;
  };

  // One backend's share, given back when destroyed. Movable.
  class Unit {
   public:
    Unit() = default;
    Unit(Unit&& other) noexcept
        : budget_(std::exchange(other.budget_, nullptr)) {}
    Unit& operator=(Unit&& other) noexcept {
      if (this != &other) {
        Reset();
        budget_ = std::exchange(other.budget_, nullptr);
      }
      return *this;
    }
    Unit(const Unit&) = delete;
    Unit& operator=(const Unit&) = delete;
    ~Unit() { Reset(); }

    void Reset() {
      if (budget_ != nullptr) std::exchange(budget_, nullptr)->Release();
    }

   private:
    friend class BackendBudget;
    explicit Unit(BackendBudget* budget) : budget_(budget) {}
    BackendBudget* budget_ = nullptr;
  };

  // `count_open_files` returns the process's open descriptors, or -1 when
  // it cannot tell (then only max_backends is checked); tests pass their
  // own.
  explicit BackendBudget(Limits limits,
                         std::function<int()> count_open_files = nullptr);

  BackendBudget(const BackendBudget&) = delete;
  BackendBudget& operator=(const BackendBudget&) = delete;

  // Takes one unit for a backend about to be opened, or RESOURCE_EXHAUSTED
  // naming the bound that refused it. At a bound it first runs the
  // reclaimer (at most every 100 ms) and tries once more. REQUIRES: no pool
  // lock is held (the reclaimer takes them).
  absl::Status TryAcquire(Unit* unit);

  // Called when a bound is reached, to close idle backends of every pool:
  // backends idle until their idle_timeout must not keep a new client out
  // for that long. Set once, before the budget is used.
  void SetReclaimer(std::function<void()> reclaim) {
    reclaim_ = std::move(reclaim);
  }

  // For stats: backends open (or being opened) daemon-wide, the bound, and
  // the opens refused by a bound.
  int open() const;
  int64_t refused() const;
  int limit() const { return limits_.max_backends; }
  const Limits& limits() const { return limits_; }

 private:
  void Release();
  // One try: the unit, or the bound's error.
  absl::Status TryOnce(Unit* unit);

  const Limits limits_;
  const std::function<int()> count_open_files_;
  std::function<void()> reclaim_;
  mutable absl::Mutex mu_;
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_reclaim_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// How the drivers reach daemon-wide state. Default: unbounded (tests).
struct DriverContext {
  BackendBudget* budget = nullptr;  // must outlive every pool
};

// The process's open file descriptors, from /proc/self/fd; -1 when it cannot
// be read.
int CountOpenFiles();

// Raises the soft RLIMIT_NOFILE to min(hard limit, max_open_files); never
// lowers it. FAILED_PRECONDITION when the limits cannot be read or set.
absl::Status RaiseOpenFilesLimit(int max_open_files);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_BACKEND_BUDGET_H_
