// BackendPool on its own: sizes (pool_size + max_overflow), recycle,
// pre-ping, the backoff after a failed open, queueing, timeouts and
// cancellation. The "backend" here is a plain object whose opens and closes
// are counted: the pool's bookkeeping is under test, not a database (the
// drivers' tests run the pool against real ones). Also the daemon-wide
// BackendBudget the pools share.
#include "server/drivers/backend_pool.h"

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace connbroker::server {
namespace {

using ::testing::HasSubstr;

struct Counters {
  std::atomic<int> opened{0};
  std::atomic<int> closed{0};
  std::atomic<bool> refuse_opens{false};
  std::atomic<bool> fail_pings{false};
};

struct Backend {
  explicit Backend(Counters* c) : counters(c), serial(++c->opened) {}
  ~Backend() { ++counters->closed; }
  Counters* counters;
  int serial;
};

using Pool = BackendPool<Backend>;

// `options` names no pool: MakePool does ("db", "backend").
std::shared_ptr<Pool> MakePool(Counters* counters, BackendPoolOptions options) {
  options.name = "db";
  options.role = "backend";
  return Pool::Create(
      options,
      {[counters]() -> absl::StatusOr<std::unique_ptr<Backend>> {
         if (counters->refuse_opens) {
           return absl::UnavailableError("connection refused");
         }
         return std::make_unique<Backend>(counters);
       },
       nullptr, [counters](Backend&) { return !counters->fail_pings.load(); }});
}

TEST(BackendPoolTest, OverflowBackendsCloseAfterIdling) {
  Counters counters;
  std::shared_ptr<Pool> pool =
      MakePool(&counters, {.pool_size = 2, .max_overflow = 2});
  std::vector<Pool::Lease> leases;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<Pool::Lease> lease = pool->Acquire();
    ASSERT_TRUE(lease.ok()) << lease.status();
    leases.push_back(*std::move(lease));
  }
  EXPECT_EQ(pool->Stats().open, 4);
  EXPECT_EQ(pool->Stats().max_size, 4);
  leases.clear();
  // All four stay for the next burst...
  EXPECT_EQ(pool->Stats().idle, 4);
  EXPECT_EQ(pool->CloseIdle(absl::Now()), 0);
  // ... until the overflow ones idled for overflow_idle_timeout (30 s):
  // then pool_size stay.
  EXPECT_EQ(pool->CloseIdle(absl::Now() + absl::Seconds(31)), 2);
  EXPECT_EQ(pool->Stats().open, 2);
  EXPECT_EQ(pool->Stats().idle, 2);
  EXPECT_EQ(counters.closed.load(), 2);
}

TEST(BackendPoolTest, RecycleClosesBackendsPastTheirAge) {
  Counters counters;
  std::shared_ptr<Pool> pool =
      MakePool(&counters, {.pool_size = 1, .recycle = absl::Milliseconds(30)});
  int first_serial;
  {
    absl::StatusOr<Pool::Lease> lease = pool->Acquire();
    ASSERT_TRUE(lease.ok());
    first_serial = (*lease)->serial;
  }
  absl::SleepFor(absl::Milliseconds(40));  // the backend's age, not a race
  absl::StatusOr<Pool::Lease> lease = pool->Acquire();
  ASSERT_TRUE(lease.ok());
  EXPECT_NE((*lease)->serial, first_serial);
  EXPECT_EQ(pool->Stats().recycled, 1);
}

TEST(BackendPoolTest, PrePingReplacesADeadIdleBackend) {
  Counters counters;
  std::shared_ptr<Pool> pool = MakePool(
      &counters, {.pool_size = 1, .pre_ping_after = absl::ZeroDuration()});
  { ASSERT_TRUE(pool->Acquire().ok()); }
  counters.fail_pings = true;
  absl::StatusOr<Pool::Lease> lease = pool->Acquire();
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ((*lease)->serial, 2);  // a new one, not the dead one
  EXPECT_EQ(pool->Stats().pre_ping_failures, 1);
  EXPECT_EQ(counters.closed.load(), 1);
}

TEST(BackendPoolTest, AFailedOpenBacksOffThenRecovers) {
  Counters counters;
  std::shared_ptr<Pool> pool =
      MakePool(&counters, {.pool_size = 1,
                           .backoff_initial = absl::Seconds(2),
                           .backoff_max = absl::Seconds(2)});
  counters.refuse_opens = true;
  absl::StatusOr<Pool::Lease> refused = pool->Acquire();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  // During the backoff no open is tried: the last error, at once.
  counters.refuse_opens = false;
  absl::StatusOr<Pool::Lease> backing_off = pool->Acquire();
  ASSERT_FALSE(backing_off.ok());
  EXPECT_THAT(backing_off.status().message(), HasSubstr("next attempt in"));
  EXPECT_EQ(counters.opened.load(), 0);
  EXPECT_EQ(pool->Stats().connect_failures, 1);
  EXPECT_EQ(pool->Stats().in_use, 0);  // failed claims give their slot back
  // Once it passes (1-3 s with jitter), the next claim opens and the pool
  // recovers.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  absl::StatusOr<Pool::Lease> recovered = pool->Acquire();
  while (!recovered.ok() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(50));
    recovered = pool->Acquire();
  }
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_EQ(counters.opened.load(), 1);
}

TEST(BackendPoolTest, AQueuedCallerTimesOutWithResourceExhausted) {
  Counters counters;
  std::shared_ptr<Pool> pool = MakePool(
      &counters, {.pool_size = 1, .acquire_timeout = absl::Milliseconds(50)});
  absl::StatusOr<Pool::Lease> held = pool->Acquire();
  ASSERT_TRUE(held.ok());
  absl::Notification answered;
  absl::Status answer;
  pool->Reserve(nullptr, [&](absl::StatusOr<Reservation> slot) {
    answer = slot.status();
    answered.Notify();
  });
  // Answered by the timer thread; this thread waits for the answer only.
  ASSERT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(answer.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(answer.message(), HasSubstr("pool_size 1 + max_overflow 0"));
  EXPECT_EQ(pool->Stats().acquire_timeouts, 1);
  EXPECT_EQ(pool->Stats().waiting, 0);
}

TEST(BackendPoolTest, AReleasedBackendGoesToTheFirstWaiter) {
  Counters counters;
  std::shared_ptr<Pool> pool = MakePool(&counters, {.pool_size = 1});
  absl::StatusOr<Pool::Lease> held = pool->Acquire();
  ASSERT_TRUE(held.ok());
  std::vector<int> order;
  std::vector<Reservation> granted;
  granted.reserve(3);
  for (int i = 0; i < 3; ++i) {
    pool->Reserve(nullptr, [&, i](absl::StatusOr<Reservation> slot) {
      ASSERT_TRUE(slot.ok());
      order.push_back(i);
      granted.push_back(*std::move(slot));
    });
  }
  EXPECT_TRUE(order.empty());
  held->Release();  // runs the first waiter's callback on this thread
  ASSERT_EQ(order.size(), 1u);
  // A claimed reservation is a lease on the same backend.
  absl::StatusOr<Pool::Lease> lease = pool->Claim(std::move(granted[0]));
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ((*lease)->serial, 1);
  lease->Release();
  EXPECT_THAT(order, ::testing::ElementsAre(0, 1));
  {
    // Dropped unclaimed: the slot passes on (the callback appends to
    // `granted`, so the reservation leaves the vector first).
    Reservation dropped = std::move(granted[1]);
  }
  EXPECT_THAT(order, ::testing::ElementsAre(0, 1, 2));
}

TEST(BackendPoolTest, CloseFailsTheQueuedCallers) {
  Counters counters;
  std::shared_ptr<Pool> pool = MakePool(&counters, {.pool_size = 1});
  absl::StatusOr<Pool::Lease> held = pool->Acquire();
  ASSERT_TRUE(held.ok());
  absl::Status answer;
  pool->Reserve(nullptr, [&](absl::StatusOr<Reservation> slot) {
    answer = slot.status();
  });
  pool->Close();
  EXPECT_EQ(answer.code(), absl::StatusCode::kUnavailable);
  held->Release();
  EXPECT_EQ(pool->Stats().open, 0);
}

TEST(BackendPoolTest, MinIdleIsKeptOpen) {
  Counters counters;
  std::shared_ptr<Pool> pool = MakePool(
      &counters,
      {.pool_size = 3, .min_idle = 2, .idle_timeout = absl::ZeroDuration()});
  pool->FillMinIdle();
  EXPECT_EQ(pool->Stats().idle, 2);
  // Idle past the timeout, but min_idle stay.
  EXPECT_EQ(pool->CloseIdle(absl::Now() + absl::Hours(1)), 0);
  EXPECT_EQ(pool->Stats().idle, 2);
}

// ---------------------------------------------------------------------------
// The daemon-wide budget (BackendBudget) over several pools.

// Found by the abuse run: after a flood, idle backends held every unit until
// their idle_timeout (10 min) and every new client was refused meanwhile.
// At the bound the budget's reclaimer closes idle backends and tries again.
TEST(BackendBudgetTest, AtTheBoundIdleBackendsOfOtherPoolsAreReclaimed) {
  BackendBudget budget({.max_backends = 2}, [] { return 10; });
  Counters counters_a;
  Counters counters_b;
  std::shared_ptr<Pool> a =
      MakePool(&counters_a, {.pool_size = 2, .budget = &budget});
  std::shared_ptr<Pool> b =
      MakePool(&counters_b, {.pool_size = 2, .budget = &budget});
  int reclaims = 0;
  budget.SetReclaimer([&] {
    ++reclaims;
    a->ShedIdle();
  });
  {
    absl::StatusOr<Pool::Lease> a1 = a->Acquire();
    absl::StatusOr<Pool::Lease> a2 = a->Acquire();
    ASSERT_TRUE(a1.ok() && a2.ok());
  }
  EXPECT_EQ(a->Stats().idle, 2);
  absl::StatusOr<Pool::Lease> b1 = b->Acquire();
  ASSERT_TRUE(b1.ok()) << b1.status();
  EXPECT_EQ(reclaims, 1);
  // The older idle one went; `a` keeps one, so its next call needs no unit.
  EXPECT_EQ(a->Stats().idle, 1);
  EXPECT_EQ(budget.open(), 2);
  EXPECT_EQ(budget.refused(), 0);
  absl::StatusOr<Pool::Lease> a3 = a->Acquire();
  ASSERT_TRUE(a3.ok());
  EXPECT_EQ(counters_a.opened.load(), 2);  // reused, not reopened

  // Nothing idle is left to reclaim: refused, and counted.
  absl::StatusOr<Pool::Lease> b2 = b->Acquire();
  EXPECT_EQ(b2.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(budget.refused(), 1);
}

TEST(BackendBudgetTest, TwoPoolsShareTheBackendLimit) {
  BackendBudget budget({.max_backends = 2}, [] { return 10; });
  Counters counters_a;
  Counters counters_b;
  std::shared_ptr<Pool> a =
      MakePool(&counters_a, {.pool_size = 2, .budget = &budget});
  std::shared_ptr<Pool> b =
      MakePool(&counters_b, {.pool_size = 2, .budget = &budget});

  absl::StatusOr<Pool::Lease> a1 = a->Acquire();
  absl::StatusOr<Pool::Lease> b1 = b->Acquire();
  ASSERT_TRUE(a1.ok() && b1.ok());
  EXPECT_EQ(budget.open(), 2);

  absl::StatusOr<Pool::Lease> b2 = b->Acquire();
  ASSERT_EQ(b2.status().code(), absl::StatusCode::kResourceExhausted)
      << b2.status();
  EXPECT_THAT(b2.status().message(),
              HasSubstr("daemon-wide backend limit reached "
                        "(limits.max_backends = 2 open backends)"));
  EXPECT_THAT(b2.status().message(), HasSubstr("broker.toml"));
  // Refused by the daemon, not by the database: no failure counted, no
  // backoff, and the slot is free again.
  EXPECT_EQ(b->Stats().connect_failures, 0);
  EXPECT_EQ(b->Stats().open, 1);
  EXPECT_EQ(b->Stats().in_use, 1);

  // An idle backend of another pool is not taken from it...
  a1->Release();
  EXPECT_FALSE(b->Acquire().ok());
  // ... but its own pool reuses it.
  {
    absl::StatusOr<Pool::Lease> again = a->Acquire();
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(counters_a.opened.load(), 1);
  }
  // Once it closes, the other pool may open.
  EXPECT_EQ(a->Reset(), 1);
  EXPECT_EQ(budget.open(), 1);
  b2 = b->Acquire();
  ASSERT_TRUE(b2.ok()) << b2.status();
  EXPECT_EQ(budget.open(), 2);

  // Units go back as backends close, whoever closes them.
  b1 = absl::UnavailableError("dropped");
  b2 = absl::UnavailableError("dropped");
  EXPECT_EQ(budget.open(), 2);  // idle in b
  b->Close();
  EXPECT_EQ(budget.open(), 0);
}

TEST(BackendBudgetTest, MinIdleWaitsForTheBudget) {
  BackendBudget budget({.max_backends = 1}, [] { return 10; });
  Counters counters;
  std::shared_ptr<Pool> pool =
      MakePool(&counters, {.pool_size = 3, .min_idle = 3, .budget = &budget});
  pool->FillMinIdle();
  EXPECT_EQ(pool->Stats().open, 1);
  EXPECT_EQ(pool->Stats().idle, 1);
  EXPECT_EQ(budget.open(), 1);
}

TEST(BackendBudgetTest, RefusesWhenTooFewFilesAreLeftForClients) {
  std::atomic<int> files{89};
  BackendBudget budget(
      {.max_backends = 100, .max_open_files = 100, .reserved_files = 10},
      [&files] { return files.load(); });
  BackendBudget::Unit unit;
  ASSERT_TRUE(budget.TryAcquire(&unit).ok());
  EXPECT_EQ(budget.open(), 1);
  files = 90;
  BackendBudget::Unit refused;
  absl::Status status = budget.TryAcquire(&refused);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("too many open files in the daemon"));
  EXPECT_THAT(status.message(), HasSubstr("limits.max_open_files = 100"));
  EXPECT_THAT(status.message(), HasSubstr("10 kept for client sockets"));
  EXPECT_EQ(budget.open(), 1);
  unit.Reset();
  EXPECT_EQ(budget.open(), 0);
}

TEST(BackendBudgetTest, CountOpenFilesSeesThisProcess) {
  const int before = CountOpenFiles();
  ASSERT_GT(before, 2);  // stdin, stdout, stderr at least
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  EXPECT_EQ(CountOpenFiles(), before + 2);
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_EQ(CountOpenFiles(), before);
}

TEST(BackendBudgetTest, RaiseOpenFilesLimitRaisesTheSoftLimitOnly) {
  struct rlimit start;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &start), 0);
  // Never lowered.
  ASSERT_TRUE(RaiseOpenFilesLimit(16).ok());
  struct rlimit now;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &now), 0);
  EXPECT_EQ(now.rlim_cur, start.rlim_cur);
  if (start.rlim_max == RLIM_INFINITY || start.rlim_max > start.rlim_cur) {
    ASSERT_TRUE(RaiseOpenFilesLimit(static_cast<int>(start.rlim_cur) + 1).ok());
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &now), 0);
    EXPECT_EQ(now.rlim_cur, start.rlim_cur + 1);
  }
  // Past the hard limit: held to it.
  if (start.rlim_max != RLIM_INFINITY && start.rlim_max < (1u << 30)) {
    ASSERT_TRUE(RaiseOpenFilesLimit(1 << 30).ok());
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &now), 0);
    EXPECT_EQ(now.rlim_cur, start.rlim_max);
  }
  ::setrlimit(RLIMIT_NOFILE, &start);
}

}  // namespace
}  // namespace connbroker::server
