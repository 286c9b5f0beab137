// FakeClock: a Clock that tests move by hand, for TTL logic without sleeping.
//
// It also counts how often it was read. The registry and the result cache
// read the clock under their lock just before a caller may wait for another
// caller's work, so "the clock was read N times" tells a test that N callers
// are inside (and waiting), without sleeping. Thread-safe.
#ifndef CONNBROKER_TESTS_UNIT_FAKE_CLOCK_H_
#define CONNBROKER_TESTS_UNIT_FAKE_CLOCK_H_

#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/clock.h"

namespace connbroker::testing {

class FakeClock final : public server::Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1700000000))
      : now_(start) {}

  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    ++reads_;
    return now_;
  }

  void Advance(absl::Duration by) {
    absl::MutexLock lock(&mu_);
    now_ += by;
  }

  int64_t reads() const {
    absl::MutexLock lock(&mu_);
    return reads_;
  }

  // Blocks until Now() has been called `count` times in all, or `timeout`
  // passes (then returns false, so a broken caller fails a test instead of
  // hanging it).
  bool AwaitReads(int64_t count,
                  absl::Duration timeout = absl::Seconds(30)) const {
    absl::MutexLock lock(&mu_);
    auto reached = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return reads_ >= count;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  mutable int64_t reads_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace connbroker::testing

#endif  // CONNBROKER_TESTS_UNIT_FAKE_CLOCK_H_
