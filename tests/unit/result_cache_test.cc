// Tests of ResultCache: TTL, byte budget, per-owner drops, and single flight
// (one leader, the others share its result, failure or abandonment).
//
// Races are made real without sleeping: the cache reads its clock under its
// lock just before a caller may wait, so FakeClock::AwaitReads(n) returns
// once n callers are inside GetOrLead -- and any that found a flight is
// waiting on it by the time the leader can take the lock to publish.
#include "server/result_cache.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_clock.h"

namespace connbroker::server {
namespace {

using ::connbroker::testing::FakeClock;
using ::testing::HasSubstr;

std::shared_ptr<const CachedResult> Result(int64_t bytes, int64_t rows = 1) {
  auto result = std::make_shared<CachedResult>();
  result->row_count = rows;
  result->bytes = bytes;
  return result;
}

// Far enough that no test should reach it; a hang fails instead of passing.
absl::Time Later() { return absl::Now() + absl::Seconds(30); }

class ResultCacheTest : public ::testing::Test {
 protected:
  ResultCache::Lookup MustLookup(const std::string& key,
                                 const std::string& owner = "conn") {
    absl::StatusOr<ResultCache::Lookup> lookup =
        cache_.GetOrLead(key, owner, Later());
    EXPECT_TRUE(lookup.ok()) << lookup.status();
    return lookup.ok() ? *std::move(lookup) : ResultCache::Lookup{};
  }

  // Leads `key` and publishes `result` for `ttl`.
  void Put(const std::string& key, std::shared_ptr<const CachedResult> result,
           absl::Duration ttl, const std::string& owner = "conn") {
    ResultCache::Lookup lookup = MustLookup(key, owner);
    ASSERT_NE(lookup.flight, nullptr) << key << " was already cached";
    lookup.flight->Publish(std::move(result), ttl);
  }

  bool IsCached(const std::string& key, const std::string& owner = "conn") {
    ResultCache::Lookup lookup = MustLookup(key, owner);
    if (lookup.flight != nullptr) {
      lookup.flight->Abandon();
      return false;
    }
    return true;
  }

  FakeClock clock_;
  ResultCache cache_{&clock_, /*max_bytes=*/1000, /*max_entry_bytes=*/400};
};

TEST_F(ResultCacheTest, MissThenPublishThenHit) {
  ResultCache::Lookup miss = MustLookup("q");
  ASSERT_NE(miss.flight, nullptr);
  EXPECT_EQ(miss.result, nullptr);
  auto result = Result(100);
  miss.flight->Publish(result, absl::Seconds(10));

  ResultCache::Lookup hit = MustLookup("q");
  EXPECT_EQ(hit.flight, nullptr);
  EXPECT_EQ(hit.result, result);
  EXPECT_FALSE(hit.joined);
  ResultCacheStats stats = cache_.Stats();
  EXPECT_EQ(stats.misses, 1);
  EXPECT_EQ(stats.hits, 1);
  EXPECT_EQ(stats.joins, 0);
  EXPECT_EQ(stats.entries, 1);
  EXPECT_EQ(stats.bytes, 100);
}

TEST_F(ResultCacheTest, EntryExpiresAfterTtl) {
  Put("q", Result(100), absl::Seconds(10));
  clock_.Advance(absl::Seconds(9));
  EXPECT_TRUE(IsCached("q"));
  clock_.Advance(absl::Seconds(1));
  EXPECT_FALSE(IsCached("q"));
  EXPECT_EQ(cache_.Stats().entries, 0);
  EXPECT_EQ(cache_.Stats().bytes, 0);
}

TEST_F(ResultCacheTest, EvictExpiredDropsOnlyExpiredEntries) {
  Put("short", Result(100), absl::Seconds(5));
  Put("long", Result(100), absl::Seconds(50));
  clock_.Advance(absl::Seconds(5));
  cache_.EvictExpired();
  ResultCacheStats stats = cache_.Stats();
  EXPECT_EQ(stats.entries, 1);
  EXPECT_EQ(stats.bytes, 100);
  EXPECT_TRUE(IsCached("long"));
}

TEST_F(ResultCacheTest, ZeroTtlIsNotCached) {
  Put("q", Result(100), absl::ZeroDuration());
  EXPECT_EQ(cache_.Stats().entries, 0);
  EXPECT_FALSE(IsCached("q"));
}

TEST_F(ResultCacheTest, TooLargeResultIsNotCached) {
  EXPECT_EQ(cache_.max_entry_bytes(), 400);
  Put("fits", Result(400), absl::Seconds(10));
  Put("big", Result(401), absl::Seconds(10));
  EXPECT_TRUE(IsCached("fits"));
  EXPECT_FALSE(IsCached("big"));
  EXPECT_EQ(cache_.Stats().bytes, 400);
}

TEST_F(ResultCacheTest, OverBudgetEvictsTheSoonestToExpire) {
  Put("a", Result(300), absl::Seconds(30));
  Put("b", Result(300), absl::Seconds(10));
  Put("c", Result(300), absl::Seconds(60));
  EXPECT_EQ(cache_.Stats().bytes, 900);
  Put("d", Result(300), absl::Seconds(20));  // 1200 > 1000: b goes

  EXPECT_FALSE(IsCached("b"));
  EXPECT_TRUE(IsCached("a"));
  EXPECT_TRUE(IsCached("c"));
  EXPECT_TRUE(IsCached("d"));
  EXPECT_EQ(cache_.Stats().bytes, 900);
  EXPECT_EQ(cache_.Stats().entries, 3);
}

TEST_F(ResultCacheTest, DropOwnerDropsOnlyThatOwner) {
  Put("k1", Result(10), absl::Seconds(10), "o1");
  Put("k2", Result(10), absl::Seconds(10), "o1");
  Put("k3", Result(10), absl::Seconds(10), "o2");
  EXPECT_EQ(cache_.CountOwner("o1"), 2);

  EXPECT_EQ(cache_.DropOwner("o1"), 2);
  EXPECT_EQ(cache_.CountOwner("o1"), 0);
  EXPECT_EQ(cache_.CountOwner("o2"), 1);
  EXPECT_TRUE(IsCached("k3", "o2"));
  EXPECT_FALSE(IsCached("k1", "o1"));
  EXPECT_EQ(cache_.Stats().bytes, 10);
}

TEST_F(ResultCacheTest, ResultOfAFlightBegunBeforeDropOwnerIsNotCached) {
  ResultCache::Lookup before = MustLookup("q", "o1");
  ASSERT_NE(before.flight, nullptr);
  EXPECT_EQ(cache_.DropOwner("o1"), 0);
  before.flight->Publish(Result(10), absl::Seconds(10));
  EXPECT_EQ(cache_.CountOwner("o1"), 0);
  EXPECT_EQ(cache_.Stats().entries, 0);

  // A flight begun after the reset caches as usual.
  Put("q", Result(10), absl::Seconds(10), "o1");
  EXPECT_EQ(cache_.CountOwner("o1"), 1);
}

TEST_F(ResultCacheTest, DeadlineWhileWaitingForALeader) {
  ResultCache::Lookup leader = MustLookup("q");
  ASSERT_NE(leader.flight, nullptr);

  for (absl::Time deadline :
       {absl::Now() - absl::Seconds(1), absl::Now() + absl::Milliseconds(20)}) {
    absl::StatusOr<ResultCache::Lookup> waited =
        cache_.GetOrLead("q", "conn", deadline);
    EXPECT_EQ(waited.status().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(waited.status().message(),
                HasSubstr("identical query in flight"));
  }
  // Giving up waiting does not disturb the flight.
  auto result = Result(10);
  leader.flight->Publish(result, absl::Seconds(10));
  EXPECT_EQ(MustLookup("q").result, result);
}

TEST_F(ResultCacheTest, SingleFlightSharesOneResult) {
  constexpr int kThreads = 8;
  auto result = Result(100);
  std::vector<absl::StatusOr<ResultCache::Lookup>> lookups(kThreads);
  std::atomic<int> leaders{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      lookups[i] = cache_.GetOrLead("q", "conn", Later());
      if (lookups[i].ok() && lookups[i]->flight != nullptr) {
        ++leaders;
        // Publish only once everyone else is waiting on this flight.
        EXPECT_TRUE(clock_.AwaitReads(kThreads));
        lookups[i]->flight->Publish(result, absl::Seconds(10));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(leaders.load(), 1);
  int joined = 0;
  for (const auto& lookup : lookups) {
    ASSERT_TRUE(lookup.ok()) << lookup.status();
    if (lookup->flight != nullptr) continue;
    EXPECT_EQ(lookup->result, result);
    if (lookup->joined) ++joined;
  }
  EXPECT_EQ(joined, kThreads - 1);
  ResultCacheStats stats = cache_.Stats();
  EXPECT_EQ(stats.misses, 1);
  EXPECT_EQ(stats.joins, kThreads - 1);
  EXPECT_EQ(stats.hits, 0);
}

TEST_F(ResultCacheTest, FailReachesEveryWaiterAndCachesNothing) {
  constexpr int kWaiters = 4;
  ResultCache::Lookup leader = MustLookup("q");
  ASSERT_NE(leader.flight, nullptr);
  const int64_t reads = clock_.reads();
  std::vector<absl::StatusOr<ResultCache::Lookup>> lookups(kWaiters);
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back(
        [&, i] { lookups[i] = cache_.GetOrLead("q", "conn", Later()); });
  }
  ASSERT_TRUE(clock_.AwaitReads(reads + kWaiters));
  leader.flight->Fail(absl::InvalidArgumentError("no such table: t"));
  for (std::thread& thread : threads) thread.join();

  for (const auto& lookup : lookups) {
    EXPECT_EQ(lookup.status(), absl::InvalidArgumentError("no such table: t"));
  }
  EXPECT_EQ(cache_.Stats().entries, 0);
  EXPECT_FALSE(IsCached("q"));
}

// The leader gives up (explicitly or by dropping its Flight): exactly one
// waiter leads next, and the other shares that waiter's result.
void CheckLeadershipPasses(FakeClock& clock, ResultCache& cache,
                           bool abandon_by_destructor) {
  absl::StatusOr<ResultCache::Lookup> first =
      cache.GetOrLead("q", "conn", Later());
  ASSERT_TRUE(first.ok());
  ASSERT_NE(first->flight, nullptr);
  const int64_t reads = clock.reads();

  constexpr int kWaiters = 2;
  auto result = Result(10);
  std::vector<absl::StatusOr<ResultCache::Lookup>> lookups(kWaiters);
  std::atomic<int> leaders{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&, i] {
      lookups[i] = cache.GetOrLead("q", "conn", Later());
      if (lookups[i].ok() && lookups[i]->flight != nullptr) {
        ++leaders;
        // Each waiter reads the clock once more after the abandon; then the
        // other one is waiting on this new flight.
        EXPECT_TRUE(clock.AwaitReads(reads + 2 * kWaiters));
        lookups[i]->flight->Publish(result, absl::Seconds(10));
      }
    });
  }
  ASSERT_TRUE(clock.AwaitReads(reads + kWaiters));
  if (abandon_by_destructor) {
    first->flight.reset();
  } else {
    first->flight->Abandon();
  }
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(leaders.load(), 1);
  for (const auto& lookup : lookups) {
    ASSERT_TRUE(lookup.ok()) << lookup.status();
    if (lookup->flight != nullptr) continue;
    EXPECT_TRUE(lookup->joined);
    EXPECT_EQ(lookup->result, result);
  }
  EXPECT_EQ(cache.Stats().misses, 2);
  EXPECT_EQ(cache.Stats().joins, 1);
}

TEST_F(ResultCacheTest, AbandonHandsLeadershipToExactlyOneWaiter) {
  CheckLeadershipPasses(clock_, cache_, /*abandon_by_destructor=*/false);
}

TEST_F(ResultCacheTest, DroppedFlightAbandons) {
  CheckLeadershipPasses(clock_, cache_, /*abandon_by_destructor=*/true);
}

TEST_F(ResultCacheTest, OnlyTheFirstOutcomeCounts) {
  ResultCache::Lookup leader = MustLookup("q");
  ASSERT_NE(leader.flight, nullptr);
  auto result = Result(10);
  leader.flight->Publish(result, absl::Seconds(10));
  leader.flight->Fail(absl::InternalError("late"));
  leader.flight->Abandon();
  EXPECT_EQ(MustLookup("q").result, result);
}

// GetOrLeadAsync: followers register a callback instead of blocking. No
// threads are needed: the callbacks run on the thread that ends the flight.
class AsyncFollowerTest : public ResultCacheTest {
 protected:
  struct Outcome {
    int calls = 0;
    std::shared_ptr<const CachedResult> result;
    absl::Status status;
  };

  // Looks `key` up asynchronously; a follower's outcome lands in `outcome`.
  ResultCache::Lookup Follow(const std::string& key, Outcome* outcome) {
    absl::StatusOr<ResultCache::Lookup> lookup = cache_.GetOrLeadAsync(
        key, "conn",
        [outcome](std::shared_ptr<const CachedResult> result,
                  absl::Status status) {
          ++outcome->calls;
          outcome->result = std::move(result);
          outcome->status = std::move(status);
        });
    EXPECT_TRUE(lookup.ok()) << lookup.status();
    return lookup.ok() ? *std::move(lookup) : ResultCache::Lookup{};
  }
};

TEST_F(AsyncFollowerTest, FollowersAreToldThePublishedResult) {
  Outcome unused, first, second;
  ResultCache::Lookup leader = Follow("q", &unused);
  ASSERT_NE(leader.flight, nullptr);
  ResultCache::Lookup a = Follow("q", &first);
  ResultCache::Lookup b = Follow("q", &second);
  // Registered: neither a result nor a flight, and not called yet.
  EXPECT_EQ(a.result, nullptr);
  EXPECT_EQ(a.flight, nullptr);
  EXPECT_EQ(b.flight, nullptr);
  EXPECT_EQ(first.calls, 0);

  auto result = Result(100);
  leader.flight->Publish(result, absl::Seconds(10));
  EXPECT_EQ(first.calls, 1);
  EXPECT_EQ(second.calls, 1);
  EXPECT_EQ(first.result, result);
  EXPECT_EQ(second.result, result);
  EXPECT_TRUE(first.status.ok());
  EXPECT_EQ(unused.calls, 0);  // the leader is never called back
  ResultCacheStats stats = cache_.Stats();
  EXPECT_EQ(stats.misses, 1);
  EXPECT_EQ(stats.joins, 2);
  // And it is cached for the next asker, who gets it at once.
  Outcome later;
  EXPECT_EQ(Follow("q", &later).result, result);
  EXPECT_EQ(later.calls, 0);
}

TEST_F(AsyncFollowerTest, FollowersShareAFailure) {
  Outcome unused, follower;
  ResultCache::Lookup leader = Follow("q", &unused);
  ASSERT_NE(leader.flight, nullptr);
  Follow("q", &follower);
  leader.flight->Fail(absl::InvalidArgumentError("no such table: t"));
  EXPECT_EQ(follower.calls, 1);
  EXPECT_EQ(follower.result, nullptr);
  EXPECT_EQ(follower.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(follower.status.message()),
              HasSubstr("no such table"));
}

TEST_F(AsyncFollowerTest, AbandonTellsFollowersToLookAgain) {
  Outcome unused, follower;
  ResultCache::Lookup leader = Follow("q", &unused);
  ASSERT_NE(leader.flight, nullptr);
  Follow("q", &follower);
  leader.flight.reset();  // destroyed without an outcome: abandoned
  EXPECT_EQ(follower.calls, 1);
  EXPECT_EQ(follower.result, nullptr);
  EXPECT_TRUE(follower.status.ok());
  // Looking again, the follower leads.
  Outcome again;
  EXPECT_NE(Follow("q", &again).flight, nullptr);
}

TEST_F(AsyncFollowerTest, AsyncFollowersAndBlockingWaitersShareOneFlight) {
  Outcome unused, async_follower;
  ResultCache::Lookup leader = Follow("q", &unused);
  ASSERT_NE(leader.flight, nullptr);
  Follow("q", &async_follower);
  std::thread blocking([&] {
    ResultCache::Lookup joined = MustLookup("q");
    EXPECT_TRUE(joined.joined);
    EXPECT_NE(joined.result, nullptr);
  });
  // Two clock reads: the leader's lookup, the async follower's; the third is
  // the blocking waiter's, just before it waits.
  ASSERT_TRUE(clock_.AwaitReads(3));
  leader.flight->Publish(Result(10), absl::Seconds(10));
  blocking.join();
  EXPECT_EQ(async_follower.calls, 1);
  EXPECT_EQ(cache_.Stats().joins, 2);
}

}  // namespace
}  // namespace connbroker::server
