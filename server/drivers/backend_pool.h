// BackendPool: a bounded pool of backend (physical) connections of one kind,
// shared by every driver (SQLite's readers and writer, PostgreSQL, MySQL).
//
// Getting a backend is two steps, so that waiting for one costs no thread:
//  1. Reserve() asks for a slot. When one is free the callback runs at once;
//     otherwise the caller queues (first come, first served) and the callback
//     runs later, on the thread that freed a slot, or with RESOURCE_EXHAUSTED
//     when the acquire timeout passes (a TimerQueue fires it), or with
//     CANCELLED when the caller's CancelSignal fires. The callback must not
//     block: it hands the work to a worker thread.
//  2. Claim() turns the Reservation into a Lease on a worker thread: it takes
//     an idle backend (checking it first when pre-ping is on and it sat idle,
//     closing it when past its recycle age) or opens a new one through the
//     factory. Opening never waits for other users, only for the database.
// Acquire() does both and blocks; it is for code that already holds a worker
// and cannot queue (and for tests).
//
// Sizes follow SQLAlchemy's QueuePool -- pool_size backends kept, up to
// max_overflow more under load -- with one difference: QueuePool closes an
// overflow backend as soon as it comes back while pool_size others are
// idle, which suits one process's pool. A daemon's pool serves every app
// process at once, and there that rule closed and reopened a backend on
// nearly every call once more than pool_size callers overlapped (106 new
// PostgreSQL sessions in 3 s with 8 clients). Overflow backends therefore
// stay idle for overflow_idle_timeout (30 s) before CloseIdle closes them. A
// failed open starts an exponential backoff with jitter: until it passes, opens
// fail at once with the last error instead of hammering a database that is
// down; the first open after it is the probe, and recovery needs no restart.
//
// Reset() bumps a generation counter: idle backends close at once, leased
// ones when returned, so a reset never pulls a backend out from under a
// running statement. The pool is owned through std::shared_ptr and every
// lease and reservation holds a reference, so they may outlive the driver
// that created the pool; Close() refuses new work. Backends are always
// destroyed outside the lock: closing can be slow (a WAL checkpoint, a
// network goodbye).
//
// Thread-safe.
#ifndef CONNBROKER_SERVER_DRIVERS_BACKEND_POOL_H_
#define CONNBROKER_SERVER_DRIVERS_BACKEND_POOL_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/drivers/backend_budget.h"
#include "server/drivers/cancel_signal.h"
#include "server/drivers/timer_queue.h"

namespace connbroker::server {

struct BackendPoolOptions {
  std::string name{};  // the connection's name, for messages
  std::string role{};  // "reader", "writer", "backend": for messages
  int pool_size = 1;
  int max_overflow = 0;
  int min_idle = 0;
  absl::Duration acquire_timeout = absl::Seconds(10);
  // InfiniteDuration: CloseIdle never closes these (e.g. the only connection
  // to an in-memory SQLite database, whose data would go with it).
  absl::Duration idle_timeout = absl::InfiniteDuration();
  // Backends beyond pool_size close after idling this long.
  absl::Duration overflow_idle_timeout = absl::Seconds(30);
  absl::Duration recycle = absl::InfiniteDuration();
  // Ping a backend idle for at least this long before handing it out;
  // InfiniteDuration: never (pre-ping off).
  absl::Duration pre_ping_after = absl::InfiniteDuration();
  int max_waiting = 256;
  absl::Duration backoff_initial = absl::Milliseconds(100);
  absl::Duration backoff_max = absl::Seconds(5);
  // The daemon-wide bound every pool's backends count against (a unit is
  // taken before a backend opens, returned when it closes); null:
  // unbounded. Must outlive the pool.
  BackendBudget* budget = nullptr;
};

struct BackendPoolCounters {
  int open = 0;
  int in_use = 0;
  int idle = 0;
  int waiting = 0;
  int max_size = 0;
  int64_t opened_total = 0;
  int64_t acquire_timeouts = 0;
  int64_t recycled = 0;
  int64_t pre_ping_failures = 0;
  int64_t connect_failures = 0;
};

// The right to one backend of a pool, not yet claimed. Movable; dropping it
// unclaimed gives the slot back. Not tied to the backend type, so a
// driver-neutral interface (Database) can pass it around.
class Reservation {
 public:
  // What hands out reservations (a BackendPool).
  class Source {
   public:
    virtual ~Source() = default;
    virtual void Unreserve() = 0;
  };

  Reservation() = default;
  Reservation(Reservation&& other) noexcept
      : source_(std::move(other.source_)) {}
  Reservation& operator=(Reservation&& other) noexcept {
    if (this != &other) {
      Drop();
      source_ = std::move(other.source_);
    }
    return *this;
  }
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { Drop(); }

  explicit operator bool() const { return source_ != nullptr; }
  // The pool this slot belongs to (drivers check it is theirs).
  const Source* source() const { return source_.get(); }

 private:
  template <typename T>
  friend class BackendPool;
  explicit Reservation(std::shared_ptr<Source> source)
      : source_(std::move(source)) {}
  void Drop() {
    if (source_ != nullptr) std::exchange(source_, nullptr)->Unreserve();
  }
  // Claimed: the slot became a lease, nothing to give back.
  void Consume() { source_.reset(); }

  std::shared_ptr<Source> source_;
};

using ReserveCallback = std::function<void(absl::StatusOr<Reservation>)>;

template <typename T>
class BackendPool : public Reservation::Source,
                    public std::enable_shared_from_this<BackendPool<T>> {
 private:
  struct Entry {
    // First, so it is returned after the backend (below) has closed.
    BackendBudget::Unit unit;
    std::unique_ptr<T> backend;
    uint64_t generation = 0;  // the pool's generation when it was opened
    absl::Time opened;
    absl::Time last_used;
    bool broken = false;
  };

  struct Waiter {
    uint64_t id = 0;
    ReserveCallback ready;
    CancelSignal* cancel = nullptr;
    TimerQueue::Id timer = 0;
    absl::Status refusal;  // set: answer this instead of a reservation
  };

 public:
  struct Hooks {
    // Opens a backend (outside the lock; may take long).
    std::function<absl::StatusOr<std::unique_ptr<T>>()> open;
    // Runs on a backend as it is returned, before it goes back to the idle
    // list (roll back a transaction left open). False closes it.
    std::function<bool(T&)> recycle;
    // Checks a backend that sat idle (pre-ping). False closes it.
    std::function<bool(T&)> ping;
  };

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

    // True once MarkBroken was called (or the recycle hook failed).
    bool broken() const { return entry_ != nullptr && entry_->broken; }

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
                                             Hooks hooks) {
    return std::shared_ptr<BackendPool>(
        new BackendPool(std::move(options), std::move(hooks)));
  }

  ~BackendPool() override {
    // Every lease and reservation holds a reference, so only idle backends
    // are left here, and no waiter (each holds a reservation-to-be through
    // the pool's own shared_ptr in its timer).
    std::vector<std::unique_ptr<Entry>> idle;
    absl::MutexLock lock(&mu_);
    idle.swap(idle_);
  }

  BackendPool(const BackendPool&) = delete;
  BackendPool& operator=(const BackendPool&) = delete;

  // Asks for a slot; `ready` runs exactly once (see the file comment), at
  // once when a slot is free and nobody queues before this caller.
  // `cancel` may be null; else it must outlive the wait.
  void Reserve(CancelSignal* cancel, ReserveCallback ready) {
    uint64_t id = 0;
    absl::Status refused;
    bool reserved = false;
    {
      absl::MutexLock lock(&mu_);
      refused = RefusalLocked();
      if (refused.ok() && waiters_.empty() && Available() > 0) {
        ++reserved_;
        reserved = true;
      } else if (refused.ok()) {
        id = next_waiter_id_++;
      }
    }
    if (!refused.ok()) {
      ready(std::move(refused));
      return;
    }
    if (reserved) {
      ready(Reservation(this->shared_from_this()));
      return;
    }
    // The timer and the cancel hook are in place before the waiter is
    // queued, so a grant (which removes both) never races with setting them.
    auto waiter = std::make_shared<Waiter>();
    waiter->id = id;
    waiter->ready = std::move(ready);
    waiter->cancel = cancel;
    std::weak_ptr<BackendPool> weak = this->weak_from_this();
    const absl::Time deadline = absl::Now() + options_.acquire_timeout;
    waiter->timer = TimerQueue::Shared().Schedule(deadline, [weak, id] {
      if (auto pool = weak.lock()) pool->DropWaiter(id, /*timeout=*/true);
    });
    if (cancel != nullptr && !cancel->Arm([weak, id] {
          if (auto pool = weak.lock()) pool->DropWaiter(id, /*timeout=*/false);
        })) {
      TimerQueue::Shared().Cancel(waiter->timer);
      waiter->ready(CancelledWaiting());
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      absl::Status refused = RefusalLocked();
      if (refused.ok() && waiters_.empty() && Available() > 0) {
        ++reserved_;  // a slot came free meanwhile
        granted_.push_back(std::move(waiter));
      } else if (refused.ok()) {
        waiters_.push_back(std::move(waiter));
      } else {
        waiter->refusal = std::move(refused);
        granted_.push_back(std::move(waiter));
      }
    }
    FlushGrants();
    // A timer or cancel that fired before the waiter was queued found
    // nothing to drop: look again now that it is.
    if (cancel != nullptr && cancel->cancelled()) DropWaiter(id, false);
    if (absl::Now() >= deadline) DropWaiter(id, true);
  }

  // Turns `reservation` (from this pool) into a lease: an idle backend, or a
  // new one. The open's error when opening fails (UNAVAILABLE for a
  // database that cannot be reached), also during the backoff after a
  // failure.
  absl::StatusOr<Lease> Claim(Reservation reservation) {
    {
      absl::MutexLock lock(&mu_);
      reservation.Consume();
      --reserved_;
      ++in_use_;
    }
    while (true) {
      std::unique_ptr<Entry> candidate;
      std::vector<std::unique_ptr<Entry>> closing;  // closed outside mu_
      absl::Status refused;
      uint64_t generation;
      {
        absl::MutexLock lock(&mu_);
        const absl::Time now = absl::Now();
        while (!idle_.empty() && candidate == nullptr) {
          // Most recently used first: the others stay idle long enough for
          // CloseIdle to shrink the pool when load drops.
          std::unique_ptr<Entry> entry = std::move(idle_.back());
          idle_.pop_back();
          if (now - entry->opened >= options_.recycle) {
            ++recycled_;
            --open_;
            closing.push_back(std::move(entry));
          } else {
            candidate = std::move(entry);
          }
        }
        if (candidate == nullptr) {
          if (closed_) {
            refused = ClosedError();
          } else if (now < backoff_until_) {
            refused = absl::Status(
                last_open_error_.code(),
                absl::StrCat(last_open_error_.message(), " (next attempt in ",
                             absl::FormatDuration(absl::Trunc(
                                 backoff_until_ - now, absl::Milliseconds(1))),
                             ")"));
          } else {
            ++open_;  // the slot is taken while opening outside the lock
          }
          if (!refused.ok()) {
            --in_use_;
            GrantWaitersLocked();
          }
        }
        generation = generation_;
      }
      closing.clear();
      if (!refused.ok()) {
        FlushGrants();
        return refused;
      }
      if (candidate == nullptr) {
        // Outside mu_: the budget may read /proc (see BackendBudget).
        absl::StatusOr<BackendBudget::Unit> unit = TakeUnit();
        if (!unit.ok()) {
          {
            absl::MutexLock lock(&mu_);
            --open_;
            --in_use_;
            GrantWaitersLocked();
          }
          FlushGrants();
          return unit.status();
        }
        return OpenNew(*std::move(unit), generation);
      }
      if (hooks_.ping &&
          absl::Now() - candidate->last_used >= options_.pre_ping_after &&
          !hooks_.ping(*candidate->backend)) {
        absl::MutexLock lock(&mu_);
        ++pre_ping_failures_;
        --open_;
        continue;  // `candidate` closes; try the next idle one or open
      }
      return Lease(this->shared_from_this(), std::move(candidate));
    }
  }

  // Reserve and Claim, blocking this thread while queued (with `cancel`, if
  // given, able to end the wait).
  absl::StatusOr<Lease> Acquire(CancelSignal* cancel = nullptr) {
    absl::Notification done;
    absl::StatusOr<Reservation> slot;
    Reserve(cancel, [&](absl::StatusOr<Reservation> result) {
      slot = std::move(result);
      done.Notify();
    });
    done.WaitForNotification();
    if (!slot.ok()) return slot.status();
    return Claim(*std::move(slot));
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

  // Closes idle backends: those past their recycle age, those beyond
  // pool_size idle for overflow_idle_timeout, and any idle for idle_timeout
  // (keeping min_idle). Returns how many.
  int CloseIdle(absl::Time now) {
    std::vector<std::unique_ptr<Entry>> closing;
    {
      absl::MutexLock lock(&mu_);
      std::vector<std::unique_ptr<Entry>> keep;
      // idle_ runs from the least to the most recently used, so the oldest
      // go first and min_idle keeps the freshest.
      int may_close = static_cast<int>(idle_.size()) - options_.min_idle;
      int overflow = open_ - options_.pool_size;
      for (std::unique_ptr<Entry>& entry : idle_) {
        const absl::Duration idle_for = now - entry->last_used;
        const bool expired = now - entry->opened >= options_.recycle;
        const bool surplus =
            overflow > 0 && idle_for >= options_.overflow_idle_timeout;
        const bool unused = idle_for >= options_.idle_timeout && may_close > 0;
        if (expired || surplus || unused) {
          if (expired) ++recycled_;
          --may_close;
          --overflow;
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

  // Closes idle backends at once, whatever their idle time, keeping
  // min_idle and at least one: the daemon's backend budget is exhausted and
  // others need the units, but a connection that is merely between two calls
  // must not lose its last backend to whoever floods the daemon (and then
  // find no unit to reopen it). Returns how many.
  int ShedIdle() {
    std::vector<std::unique_ptr<Entry>> closing;
    {
      absl::MutexLock lock(&mu_);
      // idle_ runs from the least to the most recently used: the oldest go.
      const int keep =
          std::min<int>(std::max(options_.min_idle, 1), idle_.size());
      const int shed = static_cast<int>(idle_.size()) - keep;
      for (int i = 0; i < shed; ++i) closing.push_back(std::move(idle_[i]));
      idle_.erase(idle_.begin(), idle_.begin() + shed);
      open_ -= shed;
    }
    return static_cast<int>(closing.size());  // closed here, unlocked
  }

  // Opens backends until min_idle are idle (janitor). Errors are left to
  // the next Claim, which meets them again.
  void FillMinIdle() {
    while (true) {
      uint64_t generation;
      {
        absl::MutexLock lock(&mu_);
        if (closed_ || static_cast<int>(idle_.size()) >= options_.min_idle ||
            Available() <= 0 || !waiters_.empty() ||
            absl::Now() < backoff_until_) {
          return;
        }
        ++open_;
        generation = generation_;
      }
      absl::StatusOr<BackendBudget::Unit> unit = TakeUnit();
      if (!unit.ok()) {
        absl::MutexLock lock(&mu_);
        --open_;
        return;  // the daemon is at its bound: min_idle waits
      }
      absl::StatusOr<std::unique_ptr<T>> backend = hooks_.open();
      absl::MutexLock lock(&mu_);
      if (!backend.ok()) {
        --open_;
        ++connect_failures_;
        return;
      }
      ++opened_total_;
      auto entry = std::make_unique<Entry>();
      entry->unit = *std::move(unit);
      entry->backend = *std::move(backend);
      entry->generation = generation;
      entry->opened = entry->last_used = absl::Now();
      idle_.insert(idle_.begin(), std::move(entry));
    }
  }

  // Refuses further reservations (and fails the queued ones); idle backends
  // close now, leased ones when returned.
  void Close() {
    std::vector<std::unique_ptr<Entry>> closing;
    std::deque<std::shared_ptr<Waiter>> waiters;
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
      closing.swap(idle_);
      open_ -= static_cast<int>(closing.size());
      waiters.swap(waiters_);
    }
    for (const std::shared_ptr<Waiter>& waiter : waiters) {
      Unhook(*waiter);
      waiter->ready(ClosedError());
    }
  }

  BackendPoolCounters Stats() const {
    absl::MutexLock lock(&mu_);
    BackendPoolCounters counters;
    counters.open = open_;
    counters.in_use = in_use_ + reserved_;
    counters.idle = static_cast<int>(idle_.size());
    counters.waiting = static_cast<int>(waiters_.size());
    counters.max_size = MaxSize();
    counters.opened_total = opened_total_;
    counters.acquire_timeouts = acquire_timeouts_;
    counters.recycled = recycled_;
    counters.pre_ping_failures = pre_ping_failures_;
    counters.connect_failures = connect_failures_;
    return counters;
  }

  const BackendPoolOptions& options() const { return options_; }

  void Unreserve() override {
    {
      absl::MutexLock lock(&mu_);
      --reserved_;
      GrantWaitersLocked();
    }
    FlushGrants();
  }

 private:
  BackendPool(BackendPoolOptions options, Hooks hooks)
      : options_(std::move(options)), hooks_(std::move(hooks)) {}

  // The daemon-wide unit for a backend about to open (an empty one when the
  // pool has no budget).
  absl::StatusOr<BackendBudget::Unit> TakeUnit() {
    BackendBudget::Unit unit;
    if (options_.budget != nullptr) {
      absl::Status taken = options_.budget->TryAcquire(&unit);
      if (!taken.ok()) {
        return absl::Status(
            taken.code(),
            absl::StrCat("connection ", options_.name, ": cannot open a ",
                         options_.role, ": ", taken.message()));
      }
    }
    return unit;
  }

  // Claim's open of a new backend, whose slot (open_, in_use_) and budget
  // unit are taken.
  absl::StatusOr<Lease> OpenNew(BackendBudget::Unit unit, uint64_t generation) {
    absl::StatusOr<std::unique_ptr<T>> backend = hooks_.open();
    if (!backend.ok()) {
      {
        absl::MutexLock lock(&mu_);
        --open_;
        --in_use_;
        ++connect_failures_;
        last_open_error_ = backend.status();
        backoff_ = backoff_ == absl::ZeroDuration()
                       ? options_.backoff_initial
                       : std::min(backoff_ * 2, options_.backoff_max);
        // Jitter: many pools must not probe a database in lockstep.
        backoff_until_ =
            absl::Now() + backoff_ * absl::Uniform(bitgen_, 0.5, 1.5);
        GrantWaitersLocked();
      }
      FlushGrants();
      return backend.status();
    }
    auto entry = std::make_unique<Entry>();
    entry->unit = std::move(unit);
    entry->backend = *std::move(backend);
    entry->generation = generation;
    entry->opened = entry->last_used = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      backoff_ = absl::ZeroDuration();
      backoff_until_ = absl::InfinitePast();
      ++opened_total_;
    }
    return Lease(this->shared_from_this(), std::move(entry));
  }

  int MaxSize() const { return options_.pool_size + options_.max_overflow; }

  // Slots neither leased, being opened, nor reserved.
  int Available() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return MaxSize() - in_use_ - reserved_;
  }

  // Why a new caller cannot even queue: the pool is closed, or too many
  // wait already (a bound per connection, so one flood cannot queue without
  // end).
  absl::Status RefusalLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (closed_) return ClosedError();
    if (static_cast<int>(waiters_.size()) >= options_.max_waiting) {
      ++acquire_timeouts_;
      return absl::ResourceExhaustedError(
          absl::StrCat("connection ", options_.name, ": ", waiters_.size(),
                       " calls already wait for a ", options_.role,
                       " (pool_size ", options_.pool_size, " + max_overflow ",
                       options_.max_overflow, "); try again later"));
    }
    return absl::OkStatus();
  }

  absl::Status CancelledWaiting() const {
    return absl::CancelledError(absl::StrCat("cancelled while waiting for a ",
                                             options_.role, " of connection ",
                                             options_.name));
  }

  absl::Status ClosedError() const {
    return absl::UnavailableError(
        absl::StrCat("the connection ", options_.name, " is closed"));
  }

  // Hands free slots to the first waiters. Their callbacks run from
  // FlushGrants(), outside mu_, on this thread.
  void GrantWaitersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (!waiters_.empty() && (Available() > 0 || closed_)) {
      granted_.push_back(std::move(waiters_.front()));
      waiters_.pop_front();
      if (!closed_) ++reserved_;
    }
  }

  void FlushGrants() ABSL_LOCKS_EXCLUDED(mu_) {
    std::deque<std::shared_ptr<Waiter>> granted;
    bool closed;
    {
      absl::MutexLock lock(&mu_);
      granted.swap(granted_);
      closed = closed_;
    }
    for (const std::shared_ptr<Waiter>& waiter : granted) {
      Unhook(*waiter);
      if (!waiter->refusal.ok()) {
        waiter->ready(waiter->refusal);
      } else if (closed) {
        waiter->ready(ClosedError());
      } else {
        waiter->ready(Reservation(this->shared_from_this()));
      }
    }
  }

  // Stops the waiter's timer and cancel hook (it is no longer queued).
  void Unhook(const Waiter& waiter) {
    if (waiter.cancel != nullptr) waiter.cancel->Disarm();
    TimerQueue::Shared().Cancel(waiter.timer);
  }

  // The waiter `id` gave up: timed out or cancelled. Nothing if it was
  // granted already.
  void DropWaiter(uint64_t id, bool timeout) {
    std::shared_ptr<Waiter> waiter;
    {
      absl::MutexLock lock(&mu_);
      auto it = std::find_if(
          waiters_.begin(), waiters_.end(),
          [id](const std::shared_ptr<Waiter>& w) { return w->id == id; });
      if (it == waiters_.end()) return;
      waiter = std::move(*it);
      waiters_.erase(it);
      if (timeout) ++acquire_timeouts_;
    }
    if (timeout) {
      // From the timer thread: the cancel hook must go, or a later cancel
      // would look for this waiter again (harmless, but kept tidy).
      if (waiter->cancel != nullptr) waiter->cancel->Disarm();
      waiter->ready(absl::ResourceExhaustedError(absl::StrCat(
          "no free ", options_.role, " for connection ", options_.name,
          " within ", absl::FormatDuration(options_.acquire_timeout),
          " (pool_size ", options_.pool_size, " + max_overflow ",
          options_.max_overflow, ", all in use)")));
    } else {
      // From the cancel interrupter, which already holds the signal: the
      // timer only.
      TimerQueue::Shared().Cancel(waiter->timer);
      waiter->ready(CancelledWaiting());
    }
  }

  void Return(std::unique_ptr<Entry> entry) {
    // The recycle hook runs before taking the lock: it may talk to the
    // database, and the entry is still ours alone.
    if (!entry->broken && hooks_.recycle && !hooks_.recycle(*entry->backend)) {
      entry->broken = true;
    }
    {
      absl::MutexLock lock(&mu_);
      --in_use_;
      // Overflow backends stay too: CloseIdle closes them once they idled
      // for overflow_idle_timeout (see the file comment).
      const bool keep =
          !entry->broken && !closed_ && entry->generation == generation_;
      if (keep) {
        entry->last_used = absl::Now();
        idle_.push_back(std::move(entry));
      } else {
        --open_;
      }
      GrantWaitersLocked();
    }
    FlushGrants();
    // `entry` (if not kept) is closed here, outside the lock.
  }

  const BackendPoolOptions options_;
  const Hooks hooks_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Entry>> idle_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<Waiter>> waiters_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<Waiter>> granted_ ABSL_GUARDED_BY(mu_);
  uint64_t next_waiter_id_ ABSL_GUARDED_BY(mu_) = 1;
  int open_ ABSL_GUARDED_BY(mu_) = 0;      // idle + leased + being opened
  int in_use_ ABSL_GUARDED_BY(mu_) = 0;    // leased + being opened
  int reserved_ ABSL_GUARDED_BY(mu_) = 0;  // reservations not yet claimed
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  absl::Time backoff_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Status last_open_error_ ABSL_GUARDED_BY(mu_);
  absl::BitGen bitgen_ ABSL_GUARDED_BY(mu_);
  int64_t opened_total_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t acquire_timeouts_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t recycled_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t pre_ping_failures_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t connect_failures_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_BACKEND_POOL_H_
