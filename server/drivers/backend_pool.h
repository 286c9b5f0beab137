// BackendPool: a bounded pool of backend (physical) connections of one kind,
// shared by every driver (SQLite now; libpq and MySQL later).
//
// Why a pool of its own and not a mutex per connection: a backend must never
// be used by two threads at once, and waiting for one must be bounded (the
// acquire timeout becomes RESOURCE_EXHAUSTED instead of a hung call). A
// backend is handed out as a Lease (RAII): destroying the lease returns it.
//
// - Backends open lazily, up to max_size, through the factory, which runs
//   outside the pool's lock (opening can take long: files, networks).
// - Reset() bumps a generation counter: idle backends close at once, and
//   leased ones close when returned instead of going back to the idle list,
//   so a reset never pulls a backend out from under a running statement.
// - CloseIdle() closes backends unused for longer than idle_timeout.
// - The pool is owned through std::shared_ptr and every lease holds a
//   reference, so a lease (and a cursor holding it) may outlive the driver
//   object that created the pool. Close() makes the pool refuse new
//   acquires and close backends as they come back.
// Backends are always destroyed outside the lock: closing can be slow (an
// SQLite WAL checkpoint, a network goodbye).
//
// Thread-safe.
#ifndef CONNBROKER_SERVER_DRIVERS_BACKEND_POOL_H_
#define CONNBROKER_SERVER_DRIVERS_BACKEND_POOL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace connbroker::server {

struct BackendPoolOptions {
  std::string name;  // the connection's name, for messages
  std::string role;  // "reader", "writer", ...: for messages
  int max_size = 1;
  absl::Duration acquire_timeout = absl::Seconds(10);
  // InfiniteDuration: CloseIdle never closes these (e.g. the only connection
  // to an in-memory SQLite database, whose data would go with it).
  absl::Duration idle_timeout = absl::InfiniteDuration();
};

struct BackendPoolCounters {
  int open = 0;
  int in_use = 0;
  int max_size = 0;
  int64_t opened_total = 0;
  int64_t acquire_timeouts = 0;
};

template <typename T>
class BackendPool : public std::enable_shared_from_this<BackendPool<T>> {
 private:
  struct Entry {
    std::unique_ptr<T> backend;
    uint64_t generation = 0;  // the pool's generation when it was opened
    absl::Time last_used;
    bool broken = false;
  };

 public:
  using Factory = std::function<absl::StatusOr<std::unique_ptr<T>>()>;
  // Runs on a backend as it is returned, before it goes back to the idle list
  // (e.g. roll back a transaction left open). Returning false closes it.
  using Recycle = std::function<bool(T&)>;

  // A backend held by one user. Movable, not copyable.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&& other) noexcept {
      if (this != &other) {
        Release();
        pool_ = std::move(other.pool_);
        entry_ = std::move(other.entry_);
      }
      return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { Release(); }

    explicit operator bool() const { return entry_ != nullptr; }
    T* get() const { return entry_->backend.get(); }
    T* operator->() const { return get(); }
    T& operator*() const { return *get(); }

    // The backend is broken (I/O error, lost link): close it on return
    // instead of handing it to the next user.
    void MarkBroken() {
      if (entry_ != nullptr) entry_->broken = true;
    }

    // Returns the backend now (idempotent).
    void Release() {
      if (entry_ != nullptr) pool_->Return(std::move(entry_));
      pool_.reset();
    }

   private:
    friend class BackendPool;
    Lease(std::shared_ptr<BackendPool> pool, std::unique_ptr<Entry> entry)
        : pool_(std::move(pool)), entry_(std::move(entry)) {}

    std::shared_ptr<BackendPool> pool_;
    std::unique_ptr<Entry> entry_;
  };

  static std::shared_ptr<BackendPool> Create(BackendPoolOptions options,
                                             Factory factory,
                                             Recycle recycle = nullptr) {
    return std::shared_ptr<BackendPool>(new BackendPool(
        std::move(options), std::move(factory), std::move(recycle)));
  }

  ~BackendPool() {
    // Every lease holds a reference, so only idle backends are left here.
    std::vector<std::unique_ptr<Entry>> idle;
    {
      absl::MutexLock lock(&mu_);
      idle.swap(idle_);
    }
  }

  BackendPool(const BackendPool&) = delete;
  BackendPool& operator=(const BackendPool&) = delete;

  // Waits up to acquire_timeout for an idle backend or room to open one.
  // RESOURCE_EXHAUSTED on timeout; the factory's error if opening fails.
  absl::StatusOr<Lease> Acquire() {
    uint64_t generation;
    {
      absl::MutexLock lock(&mu_);
      if (!mu_.AwaitWithTimeout(absl::Condition(this, &BackendPool::CanAcquire),
                                options_.acquire_timeout)) {
        ++acquire_timeouts_;
        return absl::ResourceExhaustedError(absl::StrCat(
            "no free ", options_.role, " connection for ", options_.name,
            " within ", absl::FormatDuration(options_.acquire_timeout)));
      }
      if (closed_) {
        return absl::UnavailableError(
            absl::StrCat("the connection ", options_.name, " is closed"));
      }
      ++in_use_;
      if (!idle_.empty()) {
        // Most recently used first: the others stay idle long enough for
        // CloseIdle to shrink the pool when load drops.
        std::unique_ptr<Entry> entry = std::move(idle_.back());
        idle_.pop_back();
        return Lease(this->shared_from_this(), std::move(entry));
      }
      ++open_;  // reserve the slot while opening outside the lock
      generation = generation_;
    }
    absl::StatusOr<std::unique_ptr<T>> backend = factory_();
    absl::MutexLock lock(&mu_);
    if (!backend.ok()) {
      --open_;
      --in_use_;
      return backend.status();
    }
    ++opened_total_;
    auto entry = std::make_unique<Entry>();
    entry->backend = std::move(*backend);
    entry->generation = generation;
    return Lease(this->shared_from_this(), std::move(entry));
  }

  // Closes idle backends now and leased ones when returned. Returns how many
  // were closed or marked.
  int Reset() {
    std::vector<std::unique_ptr<Entry>> closing;
    int count;
    {
      absl::MutexLock lock(&mu_);
      ++generation_;
      closing.swap(idle_);
      open_ -= static_cast<int>(closing.size());
      count = static_cast<int>(closing.size()) + in_use_;
    }
    return count;  // `closing` is destroyed here, outside the lock
  }

  // Closes backends idle since before now - idle_timeout. Returns how many.
  int CloseIdle(absl::Time now) {
    std::vector<std::unique_ptr<Entry>> closing;
    {
      absl::MutexLock lock(&mu_);
      if (options_.idle_timeout == absl::InfiniteDuration()) return 0;
      std::vector<std::unique_ptr<Entry>> keep;
      for (std::unique_ptr<Entry>& entry : idle_) {
        if (now - entry->last_used >= options_.idle_timeout) {
          closing.push_back(std::move(entry));
        } else {
          keep.push_back(std::move(entry));
        }
      }
      idle_.swap(keep);
      open_ -= static_cast<int>(closing.size());
    }
    return static_cast<int>(closing.size());
  }

  // Refuses further acquires; idle backends close now, leased ones when
  // returned.
  void Close() {
    std::vector<std::unique_ptr<Entry>> closing;
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
      closing.swap(idle_);
      open_ -= static_cast<int>(closing.size());
    }
  }

  BackendPoolCounters Stats() const {
    absl::MutexLock lock(&mu_);
    BackendPoolCounters counters;
    counters.open = open_;
    counters.in_use = in_use_;
    counters.max_size = options_.max_size;
    counters.opened_total = opened_total_;
    counters.acquire_timeouts = acquire_timeouts_;
    return counters;
  }

  const BackendPoolOptions& options() const { return options_; }

 private:
  BackendPool(BackendPoolOptions options, Factory factory, Recycle recycle)
      : options_(std::move(options)),
        factory_(std::move(factory)),
        recycle_(std::move(recycle)) {}

  bool CanAcquire() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || !idle_.empty() || open_ < options_.max_size;
  }

  void Return(std::unique_ptr<Entry> entry) {
    // The recycle hook runs before taking the lock: it may talk to the
    // database, and the entry is still ours alone.
    if (!entry->broken && recycle_ && !recycle_(*entry->backend)) {
      entry->broken = true;
    }
    {
      absl::MutexLock lock(&mu_);
      --in_use_;
      if (!entry->broken && !closed_ && entry->generation == generation_) {
        entry->last_used = absl::Now();
        idle_.push_back(std::move(entry));
        return;
      }
      --open_;
    }
    // `entry` is closed here, outside the lock.
  }

  const BackendPoolOptions options_;
  const Factory factory_;
  const Recycle recycle_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Entry>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;    // idle + leased + being opened
  int in_use_ ABSL_GUARDED_BY(mu_) = 0;  // leased + being opened
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t opened_total_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t acquire_timeouts_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_BACKEND_POOL_H_
