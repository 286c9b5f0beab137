// Tests of ConnectionRegistry: st.connection's sharing, TTL and max_entries
// rules, handles that survive eviction, and one build per key under races.
// Databases are CountingDatabases: these tests watch the registry's life
// cycle, not SQL.
#include "server/connection_registry.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/fake_clock.h"
#include "tests/unit/fake_database.h"

namespace connbroker::server {
namespace {

using ::connbroker::testing::CountingDatabase;
using ::connbroker::testing::DatabaseCounters;
using ::connbroker::testing::FakeClock;
using ::testing::HasSubstr;

config::ConnectionSpec Spec(const std::string& name,
                            const std::string& database = "app.db") {
  config::ConnectionSpec spec;
  spec.name = name;
  spec.type = config::kTypeSql;
  spec.params["dialect"] = std::string("sqlite");
  spec.params["database"] = database;
  spec.description = "sqlite:///" + database;
  return spec;
}

void MustSucceed(const absl::StatusOr<ConnectOutcome>& outcome) {
  EXPECT_TRUE(outcome.ok()) << outcome.status();
}

// Databases die on the registry's releaser thread: wait (with a deadline)
// until `count` of them did.
bool AwaitDestroyed(const DatabaseCounters& counters, int count) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (counters.destroyed.load() < count) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return counters.destroyed.load() == count;
}

CacheSettings Unbounded() { return CacheSettings{}; }
CacheSettings WithTtl(absl::Duration ttl) {
  CacheSettings settings;
  settings.ttl = ttl;
  return settings;
}
CacheSettings WithMaxEntries(int64_t max_entries) {
  CacheSettings settings;
  settings.max_entries = max_entries;
  return settings;
}

class ConnectionRegistryTest : public ::testing::Test {
 protected:
  ConnectionRegistryTest()
      : registry_(&clock_,
                  [this](const config::ConnectionSpec&)
                      -> absl::StatusOr<std::unique_ptr<Database>> {
                    ++factory_calls_;
                    return std::make_unique<CountingDatabase>(&counters_);
                  }) {}

  ConnectOutcome MustConnect(const config::ConnectionSpec& spec,
                             const CacheSettings& settings,
                             const std::string& session = "") {
    absl::StatusOr<ConnectOutcome> outcome =
        registry_.Connect(spec, settings, session);
    EXPECT_TRUE(outcome.ok()) << outcome.status();
    return outcome.ok() ? *std::move(outcome) : ConnectOutcome{};
  }

  bool IsLive(const std::string& handle) {
    for (const ConnectionSnapshot& row : registry_.List({})) {
      if (row.handle == handle) return row.live;
    }
    ADD_FAILURE() << "no row for " << handle;
    return false;
  }

  FakeClock clock_;
  DatabaseCounters counters_;
  std::atomic<int> factory_calls_{0};
  ConnectionRegistry registry_;
};

TEST_F(ConnectionRegistryTest, SameSpecSharesOneConnectionAndHandle) {
  ConnectOutcome first = MustConnect(Spec("db"), Unbounded());
  ConnectOutcome second = MustConnect(Spec("db"), Unbounded());

  EXPECT_TRUE(first.created);
  EXPECT_FALSE(second.created);
  EXPECT_EQ(first.connection, second.connection);
  EXPECT_EQ(first.connection->handle(), second.connection->handle());
  EXPECT_THAT(first.connection->handle(),
              ::testing::MatchesRegex("h_[0-9a-f]{32}"));
  EXPECT_EQ(factory_calls_.load(), 1);
  std::vector<ConnectionSnapshot> rows = registry_.List({});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].joins, 2);
}

TEST_F(ConnectionRegistryTest, KwargsOrderDoesNotMatter) {
  // Same kwargs written in two orders: CanonicalKey must make them one key.
  config::ConnectionSpec a;
  a.name = "db";
  a.type = config::kTypeSql;
  a.params.emplace("dialect", std::string("sqlite"));
  a.params.emplace("database", std::string("x.db"));
  a.params.emplace("query.mode", std::string("ro"));
  config::ConnectionSpec b;
  b.name = "db";
  b.type = config::kTypeSql;
  b.params.emplace("query.mode", std::string("ro"));
  b.params.emplace("database", std::string("x.db"));
  b.params.emplace("dialect", std::string("sqlite"));

  ConnectOutcome first = MustConnect(a, Unbounded());
  ConnectOutcome second = MustConnect(b, Unbounded());
  EXPECT_FALSE(second.created);
  EXPECT_EQ(first.connection->handle(), second.connection->handle());
}

TEST_F(ConnectionRegistryTest, DifferentParamsOrSettingsAreSeparate) {
  ConnectOutcome plain = MustConnect(Spec("db"), Unbounded());
  ConnectOutcome other_db = MustConnect(Spec("db", "other.db"), Unbounded());
  ConnectOutcome with_ttl = MustConnect(Spec("db"), WithTtl(absl::Minutes(10)));
  ConnectOutcome with_max = MustConnect(Spec("db"), WithMaxEntries(3));

  EXPECT_TRUE(other_db.created);
  EXPECT_TRUE(with_ttl.created);
  EXPECT_TRUE(with_max.created);
  std::vector<std::string> handles = {
      plain.connection->handle(), other_db.connection->handle(),
      with_ttl.connection->handle(), with_max.connection->handle()};
  std::sort(handles.begin(), handles.end());
  EXPECT_EQ(std::unique(handles.begin(), handles.end()), handles.end());
  EXPECT_EQ(factory_calls_.load(), 4);
  EXPECT_EQ(registry_.Stats().live, 4);
  EXPECT_EQ(registry_.Stats().handles, 4);
}

TEST_F(ConnectionRegistryTest, TtlCountsFromCreationNotFromUse) {
  const CacheSettings settings = WithTtl(absl::Seconds(10));
  ConnectOutcome first = MustConnect(Spec("db"), settings);
  clock_.Advance(absl::Seconds(5));
  ConnectOutcome joined = MustConnect(Spec("db"), settings);
  EXPECT_FALSE(joined.created);
  clock_.Advance(absl::Seconds(6));  // 11s after creation, 6s after last use

  ConnectOutcome rebuilt = MustConnect(Spec("db"), settings);
  EXPECT_TRUE(rebuilt.created);
  EXPECT_EQ(rebuilt.connection->handle(), first.connection->handle());
  EXPECT_NE(rebuilt.connection, first.connection);
  RegistryStats stats = registry_.Stats();
  EXPECT_EQ(stats.evicted_ttl, 1);
  EXPECT_EQ(stats.created, 2);
  EXPECT_EQ(stats.handles, 1);
}

TEST_F(ConnectionRegistryTest, GetRebuildsAnExpiredConnection) {
  const CacheSettings settings = WithTtl(absl::Seconds(10));
  ConnectOutcome first = MustConnect(Spec("db"), settings);
  const std::string handle = first.connection->handle();
  first.connection.reset();
  clock_.Advance(absl::Seconds(11));

  absl::StatusOr<std::shared_ptr<Connection>> again = registry_.Get(handle, "");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->handle(), handle);
  EXPECT_EQ((*again)->created(), clock_.Now());
  EXPECT_TRUE(AwaitDestroyed(counters_, 1));  // the expired one is closed
  EXPECT_EQ(counters_.constructed.load(), 2);
  EXPECT_EQ(registry_.Stats().created, 2);
  EXPECT_EQ(registry_.Stats().evicted_ttl, 1);
}

TEST_F(ConnectionRegistryTest, GetWithinTtlReturnsTheSameConnection) {
  ConnectOutcome first = MustConnect(Spec("db"), WithTtl(absl::Seconds(10)));
  clock_.Advance(absl::Seconds(9));
  absl::StatusOr<std::shared_ptr<Connection>> again =
      registry_.Get(first.connection->handle(), "");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, first.connection);
  EXPECT_EQ(factory_calls_.load(), 1);
}

TEST_F(ConnectionRegistryTest, EvictExpiredClosesUnusedConnections) {
  ConnectOutcome first = MustConnect(Spec("db"), WithTtl(absl::Seconds(10)));
  const std::string handle = first.connection->handle();
  first.connection.reset();
  clock_.Advance(absl::Seconds(10));
  EXPECT_FALSE(IsLive(handle));  // expired, although not swept yet
  EXPECT_EQ(counters_.destroyed.load(), 0);

  registry_.EvictExpired();
  EXPECT_TRUE(AwaitDestroyed(counters_, 1));
  EXPECT_EQ(registry_.Stats().live, 0);
  EXPECT_EQ(registry_.Stats().evicted_ttl, 1);
  EXPECT_TRUE(registry_.LiveConnections().empty());
  EXPECT_FALSE(IsLive(handle));
}

TEST_F(ConnectionRegistryTest, MaxEntriesEvictsTheLeastRecentlyUsed) {
  const CacheSettings settings = WithMaxEntries(2);
  const std::string a = MustConnect(Spec("a"), settings).connection->handle();
  const std::string b = MustConnect(Spec("b"), settings).connection->handle();
  const std::string c = MustConnect(Spec("c"), settings).connection->handle();

  EXPECT_FALSE(IsLive(a));
  EXPECT_TRUE(IsLive(b));
  EXPECT_TRUE(IsLive(c));
  EXPECT_EQ(registry_.Stats().evicted_max_entries, 1);
  EXPECT_EQ(registry_.Stats().live, 2);

  // The evicted handle still works: it is rebuilt, and evicts b in turn.
  absl::StatusOr<std::shared_ptr<Connection>> again = registry_.Get(a, "");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(IsLive(a));
  EXPECT_FALSE(IsLive(b));
  EXPECT_EQ(registry_.Stats().evicted_max_entries, 2);
}

TEST_F(ConnectionRegistryTest, UseRefreshesRecency) {
  const CacheSettings settings = WithMaxEntries(2);
  const std::string a = MustConnect(Spec("a"), settings).connection->handle();
  const std::string b = MustConnect(Spec("b"), settings).connection->handle();
  EXPECT_FALSE(MustConnect(Spec("a"), settings).created);  // a used after b
  MustConnect(Spec("c"), settings);

  EXPECT_TRUE(IsLive(a));
  EXPECT_FALSE(IsLive(b));
}

TEST_F(ConnectionRegistryTest, GetRefreshesRecency) {
  const CacheSettings settings = WithMaxEntries(2);
  const std::string a = MustConnect(Spec("a"), settings).connection->handle();
  const std::string b = MustConnect(Spec("b"), settings).connection->handle();
  ASSERT_TRUE(registry_.Get(a, "").ok());
  MustConnect(Spec("c"), settings);

  EXPECT_TRUE(IsLive(a));
  EXPECT_FALSE(IsLive(b));
}

TEST_F(ConnectionRegistryTest, HeldConnectionOutlivesEviction) {
  const CacheSettings settings = WithMaxEntries(1);
  std::shared_ptr<Connection> held =
      MustConnect(Spec("a"), settings).connection;
  MustConnect(Spec("b"), settings);  // evicts a

  EXPECT_EQ(registry_.Stats().evicted_max_entries, 1);
  EXPECT_EQ(counters_.destroyed.load(), 0);  // an in-flight user still has it
  EXPECT_EQ(held->spec().name, "a");
  held.reset();
  EXPECT_TRUE(AwaitDestroyed(counters_, 1));
  EXPECT_EQ(counters_.alive(), 1);  // b
}

TEST_F(ConnectionRegistryTest, UnknownHandleIsNotFound) {
  absl::StatusOr<std::shared_ptr<Connection>> got =
      registry_.Get("h_0123456789abcdef0123456789abcdef", "");
  ASSERT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(),
              HasSubstr("unknown handle 'h_0123456789abcdef0123456789abcdef'"));
  EXPECT_THAT(got.status().message(), HasSubstr("Connect again"));
}

TEST_F(ConnectionRegistryTest, SessionScopeKeysBySession) {
  config::ConnectionSpec spec = Spec("db");
  spec.scope = config::Scope::kSession;

  ConnectOutcome s1 = MustConnect(spec, Unbounded(), "s1");
  ConnectOutcome s2 = MustConnect(spec, Unbounded(), "s2");
  ConnectOutcome s1_again = MustConnect(spec, Unbounded(), "s1");

  EXPECT_NE(s1.connection, s2.connection);
  EXPECT_NE(s1.connection->handle(), s2.connection->handle());
  EXPECT_EQ(s1.connection, s1_again.connection);
  EXPECT_FALSE(s1_again.created);
  EXPECT_NE(s1.connection->key(), s2.connection->key());
}

TEST_F(ConnectionRegistryTest, GlobalScopeIgnoresSession) {
  ConnectOutcome s1 = MustConnect(Spec("db"), Unbounded(), "s1");
  ConnectOutcome s2 = MustConnect(Spec("db"), Unbounded(), "s2");
  EXPECT_EQ(s1.connection, s2.connection);
}

TEST_F(ConnectionRegistryTest, SessionScopeNeedsASessionId) {
  config::ConnectionSpec spec = Spec("db");
  spec.scope = config::Scope::kSession;
  absl::StatusOr<ConnectOutcome> outcome =
      registry_.Connect(spec, Unbounded(), "");
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(outcome.status().message(), HasSubstr("session"));
  EXPECT_EQ(factory_calls_.load(), 0);
}

TEST_F(ConnectionRegistryTest, RejectsNonPositiveSettings) {
  for (const CacheSettings& bad :
       {WithMaxEntries(0), WithMaxEntries(-1), WithTtl(absl::ZeroDuration()),
        WithTtl(absl::Seconds(-5))}) {
    absl::StatusOr<ConnectOutcome> outcome =
        registry_.Connect(Spec("db"), bad, "");
    EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(outcome.status().message(), HasSubstr("must be positive"));
  }
  EXPECT_EQ(factory_calls_.load(), 0);
}

TEST_F(ConnectionRegistryTest, ListIsSortedAndDescribesLiveConnections) {
  const CacheSettings settings = WithTtl(absl::Minutes(1));
  ConnectOutcome b = MustConnect(Spec("b"), settings);
  ConnectOutcome a = MustConnect(Spec("a"), Unbounded());
  a.connection->CountQuery();
  a.connection->CountQuery();

  std::vector<ConnectionSnapshot> rows = registry_.List({});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].name, "a");
  EXPECT_EQ(rows[1].name, "b");
  EXPECT_TRUE(rows[0].live);
  EXPECT_EQ(rows[0].queries, 2);
  EXPECT_EQ(rows[0].type, "sql");
  EXPECT_EQ(rows[0].description, "sqlite:///app.db");
  EXPECT_EQ(rows[0].pool.max_size(), 7);  // from the database's Stats()
  EXPECT_FALSE(rows[0].expires.has_value());
  ASSERT_TRUE(rows[1].expires.has_value());
  EXPECT_EQ(*rows[1].expires, b.connection->created() + absl::Minutes(1));
  EXPECT_EQ(rows[1].settings, settings);
}

class FailingOnceRegistryTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  DatabaseCounters counters_;
  int calls_ = 0;
  ConnectionRegistry registry_{
      &clock_,
      [this](const config::ConnectionSpec&)
          -> absl::StatusOr<std::unique_ptr<Database>> {
        if (++calls_ == 1) return absl::UnavailableError("db is down");
        return std::make_unique<CountingDatabase>(&counters_);
      }};
};

TEST_F(FailingOnceRegistryTest, FactoryErrorIsReturnedAndNotCached) {
  absl::StatusOr<ConnectOutcome> failed =
      registry_.Connect(Spec("db"), Unbounded(), "");
  EXPECT_EQ(failed.status(), absl::UnavailableError("db is down"));
  EXPECT_EQ(registry_.Stats().handles, 0);
  EXPECT_EQ(registry_.Stats().created, 0);

  absl::StatusOr<ConnectOutcome> retried =
      registry_.Connect(Spec("db"), Unbounded(), "");
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_TRUE(retried->created);
  EXPECT_EQ(calls_, 2);
  EXPECT_EQ(registry_.Stats().handles, 1);
}

// Destroying a Database closes backends (network I/O), so the registry must
// never let one die under its lock. Each database here, as it dies, asks
// another thread to enter the registry and waits for it: under the lock that
// thread would block, and the wait times out instead of deadlocking.
TEST(ConnectionRegistryLockTest, DatabasesAreDestroyedOutsideTheLock) {
  FakeClock clock;
  DatabaseCounters counters;
  std::vector<std::thread> probes;
  std::atomic<int> entered{0};
  std::atomic<int> blocked{0};
  ConnectionRegistry* registry_ptr = nullptr;
  auto probe = [&] {
    auto done = std::make_shared<absl::Notification>();
    probes.emplace_back([registry_ptr, done] {
      registry_ptr->Stats();
      done->Notify();
    });
    if (done->WaitForNotificationWithTimeout(absl::Seconds(5))) {
      ++entered;
    } else {
      ++blocked;
    }
  };
  {
    ConnectionRegistry registry(
        &clock,
        [&](const config::ConnectionSpec&)
            -> absl::StatusOr<std::unique_ptr<Database>> {
          return std::make_unique<CountingDatabase>(&counters, probe);
        });
    registry_ptr = &registry;
    CacheSettings settings;
    settings.max_entries = 1;
    settings.ttl = absl::Seconds(10);

    MustSucceed(registry.Connect(Spec("a"), settings, ""));
    MustSucceed(registry.Connect(Spec("b"), settings, ""));  // evicts a
    clock.Advance(absl::Seconds(10));
    MustSucceed(registry.Connect(Spec("c"), settings, ""));  // b expired
    clock.Advance(absl::Seconds(10));
    registry.EvictExpired();  // c expired
    EXPECT_TRUE(AwaitDestroyed(counters, 3));
    for (std::thread& thread : probes) thread.join();
    probes.clear();
  }
  EXPECT_EQ(entered.load(), 3);
  EXPECT_EQ(blocked.load(), 0);
}

// Runs `threads` Connects of one spec at once. The factory holds the first
// build until every caller has read the registry's clock, i.e. is inside
// Connect (the registry reads the clock under its lock, before waiting for a
// build), so the callers really race for one missing key.
struct RaceResult {
  std::vector<absl::StatusOr<ConnectOutcome>> outcomes;
  int factory_calls = 0;
};

RaceResult RaceConnects(int threads, absl::Status factory_result) {
  FakeClock clock;
  DatabaseCounters counters;
  std::atomic<int> calls{0};
  ConnectionRegistry registry(
      &clock,
      [&](const config::ConnectionSpec&)
          -> absl::StatusOr<std::unique_ptr<Database>> {
        ++calls;
        if (!clock.AwaitReads(threads)) {
          return absl::DeadlineExceededError("not every caller arrived");
        }
        if (!factory_result.ok()) return factory_result;
        return std::make_unique<CountingDatabase>(&counters);
      });
  RaceResult result;
  result.outcomes.resize(threads, absl::UnknownError("not run"));
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back([&, i] {
      result.outcomes[i] = registry.Connect(Spec("db"), Unbounded(), "");
    });
  }
  for (std::thread& worker : workers) worker.join();
  result.factory_calls = calls;
  return result;
}

TEST(ConnectionRegistryRaceTest, ConcurrentConnectsBuildOnce) {
  constexpr int kThreads = 16;
  RaceResult race = RaceConnects(kThreads, absl::OkStatus());

  EXPECT_EQ(race.factory_calls, 1);
  int created = 0;
  for (const auto& outcome : race.outcomes) {
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    if (outcome->created) ++created;
    EXPECT_EQ(outcome->connection, race.outcomes[0]->connection);
  }
  EXPECT_EQ(created, 1);
}

TEST(ConnectionRegistryRaceTest, WaitersShareTheBuildError) {
  constexpr int kThreads = 8;
  RaceResult race = RaceConnects(kThreads, absl::UnavailableError("refused"));

  EXPECT_EQ(race.factory_calls, 1);
  for (const auto& outcome : race.outcomes) {
    EXPECT_EQ(outcome.status(), absl::UnavailableError("refused"));
  }
}

// --- Issue 11: a registry shared by clients that must not hurt each other.

config::ConnectionSpec SessionSpec(const std::string& name) {
  config::ConnectionSpec spec = Spec(name);
  spec.scope = config::Scope::kSession;
  return spec;
}

// Defect 3: a session-scoped handle worked from any session.
TEST_F(ConnectionRegistryTest, ASessionsHandleWorksOnlyForThatSession) {
  ConnectOutcome mine = MustConnect(SessionSpec("private"), Unbounded(), "s1");
  EXPECT_TRUE(registry_.Get(mine.connection->handle(), "s1").ok());
  for (const char* other : {"s2", ""}) {
    absl::StatusOr<std::shared_ptr<Connection>> theirs =
        registry_.Get(mine.connection->handle(), other);
    EXPECT_EQ(theirs.status().code(), absl::StatusCode::kNotFound) << other;
  }
  // A global connection's handle works from anywhere.
  ConnectOutcome global = MustConnect(Spec("shared"), Unbounded(), "s1");
  EXPECT_TRUE(registry_.Get(global.connection->handle(), "s2").ok());
}

TEST_F(ConnectionRegistryTest, ListingShowsOnlyTheCallersSessions) {
  MustConnect(Spec("shared"), Unbounded(), "s1");
  MustConnect(SessionSpec("private"), Unbounded(), "s1");
  MustConnect(SessionSpec("private"), Unbounded(), "s2");
  auto names = [&](const ListFilter& filter) {
    std::vector<std::string> seen;
    for (const ConnectionSnapshot& row : registry_.List(filter)) {
      seen.push_back(row.name);
    }
    return seen;
  };
  EXPECT_THAT(names({"s1", false}),
              ::testing::ElementsAre("private", "shared"));
  EXPECT_THAT(names({"s3", false}), ::testing::ElementsAre("shared"));
  EXPECT_THAT(names({"s3", true}),
              ::testing::ElementsAre("private", "private", "shared"));
}

// A factory whose builds wait until the test lets them finish.
class GatedRegistryTest : public ::testing::Test {
 protected:
  GatedRegistryTest()
      : registry_(&clock_,
                  [this](const config::ConnectionSpec&)
                      -> absl::StatusOr<std::unique_ptr<Database>> {
                    absl::MutexLock lock(&mu_);
                    ++waiting_;
                    mu_.Await(absl::Condition(&open_));
                    --waiting_;
                    return std::make_unique<CountingDatabase>(&counters_);
                  }) {}

  void Open(bool open) {
    absl::MutexLock lock(&mu_);
    open_ = open;
  }
  void AwaitBuildStarted() {
    absl::MutexLock lock(&mu_);
    auto started = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return waiting_ > 0;
    };
    mu_.Await(absl::Condition(&started));
  }

  FakeClock clock_;
  DatabaseCounters counters_;
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  ConnectionRegistry registry_;
};

// Defect 6: a reload (ForgetNamed) racing the rebuild of an evicted
// connection brought the forgotten handle back, with the old spec.
TEST_F(GatedRegistryTest, ARebuildRacingForgetNamedDoesNotResurrectTheHandle) {
  absl::StatusOr<ConnectOutcome> first =
      registry_.Connect(Spec("db"), WithTtl(absl::Seconds(1)), "");
  ASSERT_TRUE(first.ok());
  const std::string handle = first->connection->handle();
  first->connection.reset();
  clock_.Advance(absl::Seconds(2));
  registry_.EvictExpired();

  Open(false);
  absl::StatusOr<std::shared_ptr<Connection>> rebuilt =
      absl::UnknownError("not run");
  std::thread get([&] { rebuilt = registry_.Get(handle, ""); });
  AwaitBuildStarted();
  EXPECT_THAT(registry_.ForgetNamed("db"), ::testing::SizeIs(1));
  Open(true);
  get.join();

  EXPECT_EQ(rebuilt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_.Get(handle, "").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry_.List({}).empty());
  EXPECT_EQ(registry_.Stats().live, 0);
}

TEST_F(GatedRegistryTest, AConnectRacingForgetNamedIsAbortedNotCached) {
  Open(false);
  absl::StatusOr<ConnectOutcome> outcome = absl::UnknownError("not run");
  std::thread connect(
      [&] { outcome = registry_.Connect(Spec("db"), Unbounded(), ""); });
  AwaitBuildStarted();
  registry_.ForgetNamed("db");
  Open(true);
  connect.join();
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(registry_.List({}).empty());
  // The next Connect (with the new section) builds afresh.
  EXPECT_TRUE(registry_.Connect(Spec("db"), Unbounded(), "").ok());
}

// Defect 8: the last reference to an evicted connection, dropped on a gRPC
// reactor thread, closed its database there.
TEST_F(ConnectionRegistryTest, DatabasesCloseOffTheThreadThatDropsThem) {
  std::thread::id closed_on;
  absl::Notification closed;
  ConnectionRegistry registry(&clock_,
                              [&](const config::ConnectionSpec&)
                                  -> absl::StatusOr<std::unique_ptr<Database>> {
                                return std::make_unique<CountingDatabase>(
                                    &counters_, [&] {
                                      closed_on = std::this_thread::get_id();
                                      closed.Notify();
                                    });
                              });
  absl::StatusOr<ConnectOutcome> outcome =
      registry.Connect(Spec("db"), Unbounded(), "");
  ASSERT_TRUE(outcome.ok());
  registry.ForgetNamed("db");
  outcome->connection.reset();  // the last reference, dropped here
  ASSERT_TRUE(closed.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_NE(closed_on, std::this_thread::get_id());
}

// limits.max_calls_per_connection: calls running or queued on one connection.
TEST_F(ConnectionRegistryTest, CallSlotsBoundTheCallsOfAConnection) {
  ConnectOutcome outcome = MustConnect(Spec("db"), Unbounded());
  Connection& connection = *outcome.connection;
  absl::StatusOr<Connection::CallSlot> first = connection.StartCall(2);
  absl::StatusOr<Connection::CallSlot> second = connection.StartCall(2);
  ASSERT_TRUE(first.ok() && second.ok());
  absl::StatusOr<Connection::CallSlot> third = connection.StartCall(2);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(),
              HasSubstr("limits.max_calls_per_connection"));
  EXPECT_EQ(connection.calls(), 2);
  *first = Connection::CallSlot();  // the first call ends
  EXPECT_EQ(connection.calls(), 1);
  EXPECT_TRUE(connection.StartCall(2).ok());
  EXPECT_EQ(connection.calls(), 1);  // that slot was dropped at once
}

class BoundedRegistryTest : public ::testing::Test {
 protected:
  static RegistryLimits Limits() {
    RegistryLimits limits;
    limits.max_connections = 2;
    limits.max_handles = 3;
    limits.handle_idle_timeout = absl::Minutes(1);
    limits.max_caches = 2;
    return limits;
  }
  BoundedRegistryTest()
      : registry_(
            &clock_,
            [this](const config::ConnectionSpec&)
                -> absl::StatusOr<std::unique_ptr<Database>> {
              return std::make_unique<CountingDatabase>(&counters_);
            },
            Limits()) {}

  FakeClock clock_;
  DatabaseCounters counters_;
  ConnectionRegistry registry_;
};

TEST_F(BoundedRegistryTest, PastMaxConnectionsAnIdleOneIsEvicted) {
  absl::StatusOr<ConnectOutcome> busy =
      registry_.Connect(Spec("a"), Unbounded(), "");  // held: a call runs
  ASSERT_TRUE(busy.ok());
  ASSERT_TRUE(registry_.Connect(Spec("b"), Unbounded(), "").ok());  // idle
  ASSERT_TRUE(registry_.Connect(Spec("c"), Unbounded(), "").ok());
  RegistryStats stats = registry_.Stats();
  EXPECT_EQ(stats.live, 2);
  EXPECT_EQ(stats.evicted_for_room, 1);
  // "a" (busy) survived; "b" (idle) made room.
  absl::StatusOr<ConnectOutcome> again =
      registry_.Connect(Spec("a"), Unbounded(), "");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
}

TEST_F(BoundedRegistryTest, PastMaxConnectionsWithNoneIdleIsRefused) {
  absl::StatusOr<ConnectOutcome> a =
      registry_.Connect(Spec("a"), Unbounded(), "");
  absl::StatusOr<ConnectOutcome> b =
      registry_.Connect(Spec("b"), Unbounded(), "");
  ASSERT_TRUE(a.ok() && b.ok());
  absl::StatusOr<ConnectOutcome> c =
      registry_.Connect(Spec("c"), Unbounded(), "");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("limits.max_connections = 2"));
  // What already runs is unaffected.
  EXPECT_TRUE(registry_.Connect(Spec("a"), Unbounded(), "").ok());
  EXPECT_EQ(registry_.Stats().refused, 1);
}

// Defect 7: a cache per distinct (ttl, max_entries) a client sent, never
// deleted.
TEST_F(BoundedRegistryTest, EmptyCachesAreDeletedAndTheirNumberIsBounded) {
  ASSERT_TRUE(registry_.Connect(Spec("a"), WithTtl(absl::Seconds(1)), "").ok());
  ASSERT_TRUE(registry_.Connect(Spec("a"), WithTtl(absl::Seconds(2)), "").ok());
  absl::StatusOr<ConnectOutcome> third =
      registry_.Connect(Spec("a"), WithTtl(absl::Seconds(3)), "");
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(),
              HasSubstr("limits.max_connection_caches"));

  // Expired and unused past handle_idle_timeout: rows and caches go.
  clock_.Advance(absl::Seconds(3));
  registry_.EvictExpired();
  EXPECT_EQ(registry_.Stats().caches, 2);  // handles still remember them
  clock_.Advance(absl::Minutes(2));
  registry_.EvictExpired();
  RegistryStats stats = registry_.Stats();
  EXPECT_EQ(stats.caches, 0);
  EXPECT_EQ(stats.handles, 0);
  EXPECT_EQ(stats.handles_reclaimed, 2);
  EXPECT_TRUE(registry_.Connect(Spec("a"), WithTtl(absl::Seconds(3)), "").ok());
}

TEST_F(BoundedRegistryTest, PastMaxHandlesTheLeastRecentlyUsedDeadRowGoes) {
  std::vector<std::string> handles;
  for (const char* name : {"a", "b", "c"}) {
    absl::StatusOr<ConnectOutcome> outcome =
        registry_.Connect(Spec(name), WithMaxEntries(1), "");
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    handles.push_back(outcome->connection->handle());
    clock_.Advance(absl::Seconds(1));
  }
  // max_entries 1: only "c" is live; "a" is the oldest dead row.
  ASSERT_TRUE(registry_.Connect(Spec("d"), WithMaxEntries(1), "").ok());
  RegistryStats stats = registry_.Stats();
  EXPECT_EQ(stats.handles, 3);
  EXPECT_EQ(stats.handles_reclaimed, 1);
  EXPECT_EQ(registry_.Get(handles[0], "").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry_.Get(handles[1], "").ok());
}

}  // namespace
}  // namespace connbroker::server
