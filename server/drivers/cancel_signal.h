// CancelSignal: how one call's cancellation reaches the work it started.
//
// The caller's side (gRPC's OnCancel, which also fires on a deadline) calls
// Cancel() from any thread. The side doing the work arms an interrupter
// around each step that can wait -- queueing for a backend, sqlite3_step,
// PQgetResult, mysql_stmt_fetch -- and disarms it after: the interrupter
// removes the waiter, calls sqlite3_interrupt, sends PQcancel or KILL QUERY.
// Only one interrupter is armed at a time.
//
// Thread-safe. The interrupter runs under the signal's lock, so once
// Disarm() returns it is neither running nor going to run; it must be quick
// and must not call Arm or Disarm.
#ifndef CONNBROKER_SERVER_DRIVERS_CANCEL_SIGNAL_H_
#define CONNBROKER_SERVER_DRIVERS_CANCEL_SIGNAL_H_

#include <atomic>
#include <functional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace connbroker::server {

class CancelSignal {
 public:
  CancelSignal() = default;
  CancelSignal(const CancelSignal&) = delete;
  CancelSignal& operator=(const CancelSignal&) = delete;

  // Marks the call cancelled and runs the armed interrupter, if any.
  // Idempotent.
  void Cancel() {
    absl::MutexLock lock(&mu_);
    if (cancelled_.exchange(true)) return;
    if (interrupt_) std::exchange(interrupt_, nullptr)();
  }

  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // The flag itself, for code that polls from inside a library (SQLite's
  // progress handler). Valid as long as the signal.
  const std::atomic<bool>* flag() const { return &cancelled_; }

  // Keeps `interrupt` until Disarm() or Cancel(). Returns false, keeping
  // nothing, when the call is already cancelled: do not start the step.
  bool Arm(std::function<void()> interrupt) {
    absl::MutexLock lock(&mu_);
    if (cancelled_.load(std::memory_order_relaxed)) return false;
    interrupt_ = std::move(interrupt);
    return true;
  }

  void Disarm() {
    std::function<void()> dropped;  // destroyed outside the lock
    absl::MutexLock lock(&mu_);
    dropped = std::exchange(interrupt_, nullptr);
  }

 private:
  std::atomic<bool> cancelled_{false};
  absl::Mutex mu_;
  std::function<void()> interrupt_ ABSL_GUARDED_BY(mu_);
};

// Arms `signal` (may be null) for one scope: ScopedInterrupt armed(signal,
// [&] { ... }); if (!armed.ok()) return CancelledError(...).
class ScopedInterrupt {
 public:
  ScopedInterrupt(CancelSignal* signal, std::function<void()> interrupt)
      : signal_(signal),
        armed_(signal == nullptr || signal->Arm(std::move(interrupt))) {}
  ~ScopedInterrupt() {
    if (signal_ != nullptr && armed_) signal_->Disarm();
  }
  ScopedInterrupt(const ScopedInterrupt&) = delete;
  ScopedInterrupt& operator=(const ScopedInterrupt&) = delete;

  // False when the signal was already cancelled (nothing armed).
  bool ok() const { return armed_; }

 private:
  CancelSignal* const signal_;
  const bool armed_;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_CANCEL_SIGNAL_H_
