// Integration tests against real PostgreSQL and MariaDB servers behind a
// real connbrokerd (see network_database_fixture.h): typed queries,
// deadlines and dead clients reaching the server, pool limits, one busy
// connection not stalling the others, pre-ping and recycle, the redirect
// policy. The server restart has a binary of its own (server_restart_test),
// run alone: a restart would fail whatever else runs against that server.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"
#include "tests/integration/network_database_fixture.h"

namespace connbroker::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

TEST_P(NetworkDatabaseTest, TypedValuesAndParametersRoundTrip) {
  Connection db = Connect("db");
  const std::string table = "rt_" + GetParam();
  ASSERT_TRUE(db.Execute("DROP TABLE IF EXISTS " + table).ok());
  ASSERT_TRUE(db.Execute(absl::StrCat("CREATE TABLE ", table,
                                      " (id INTEGER, name VARCHAR(100), "
                                      "amount DECIMAL(30,10), ratio FLOAT)"))
                  .ok());
  // Positional and named parameters, bound by the server: the quote and
  // the statement in the text stay data.
  const std::string evil = "x'); DROP TABLE " + table + "; --";
  absl::StatusOr<connbroker::ExecuteResult> inserted = db.Execute(
      absl::StrCat("INSERT INTO ", table,
                   GetParam() == "postgresql" ? " VALUES ($1, $2, $3, $4)"
                                              : " VALUES (?, ?, ?, ?)"),
      {int64_t{1}, evil, std::string("12345678901234567890.0123456789"), 0.5});
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->rows_affected, 1);
  inserted = db.Execute(
      absl::StrCat("INSERT INTO ", table, " VALUES (:id, :name, NULL, :ratio)"),
      {}, {{"id", int64_t{2}}, {"name", std::string("é ✓")}, {"ratio", 0.25}});
  ASSERT_TRUE(inserted.ok()) << inserted.status();

  absl::StatusOr<Result> result =
      db.Query(absl::StrCat("SELECT id, name, amount, ratio FROM ", table,
                            " WHERE id >= :low ORDER BY id"),
               {.named_params = {{"low", int64_t{1}}}});
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->num_rows(), 2u);
  EXPECT_EQ(std::get<int64_t>(result->cell(0, 0)), 1);
  EXPECT_EQ(std::get<std::string>(result->cell(0, 1)), evil);
  // Decimals travel exact, as text, with their database type named.
  EXPECT_EQ(std::get<std::string>(result->cell(0, 2)),
            "12345678901234567890.0123456789");
  EXPECT_THAT(result->column(2).database_type,
              AnyOf(HasSubstr("numeric"), HasSubstr("decimal")));
  EXPECT_EQ(std::get<std::string>(result->cell(1, 1)), "é ✓");
  EXPECT_TRUE(result->is_null(1, 2));
  EXPECT_DOUBLE_EQ(std::get<double>(result->cell(1, 3)), 0.25);

  // The database's own message and SQLSTATE; the daemon goes on serving.
  absl::StatusOr<Result> bad = db.Query("SELEC 1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("syntax"));
  std::optional<v1::ErrorDetail> detail = ErrorDetailOf(bad.status());
  ASSERT_TRUE(detail.has_value());
  EXPECT_EQ(detail->reason(), v1::ErrorDetail::SQL);
  EXPECT_FALSE(detail->retryable());
  EXPECT_EQ(detail->sqlstate(), GetParam() == "postgresql" ? "42601" : "42000");
  EXPECT_TRUE(db.Query("SELECT 1").ok());

  // A constraint: the same, with the constraint's SQLSTATE, in the CLI too.
  ASSERT_TRUE(db.Execute(absl::StrCat("CREATE UNIQUE INDEX ", table, "_id ON ",
                                      table, " (id)"))
                  .ok());
  ProcessResult duplicate =
      daemon_->Cli({"execute", "db",
                    absl::StrCat("INSERT INTO ", table, " (id) VALUES (1)")});
  EXPECT_EQ(duplicate.exit_code, 1);
  EXPECT_THAT(duplicate.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(duplicate.err,
              HasSubstr(GetParam() == "postgresql" ? "(SQLSTATE 23505)"
                                                   : "(SQLSTATE 23000)"));
}

TEST_P(NetworkDatabaseTest, DeadlineCancelsTheStatementOnTheServer) {
  Connection db = Connect("db");
  const absl::Time start = absl::Now();
  absl::StatusOr<Result> slept =
      db.Query(sleep_sql_, {.deadline = absl::Seconds(1)});
  ASSERT_FALSE(slept.ok());
  EXPECT_EQ(slept.status().code(), absl::StatusCode::kDeadlineExceeded);
  // The statement is gone from the server within a second or so of the
  // deadline, not after its 30 s.
  EXPECT_EQ(ObserveUntil(count_sleeping_sql_, 0, absl::Seconds(5)), 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
  // And the backend went back to the pool clean.
  EXPECT_EQ(InUseAfterSettling("db"), 0);
  absl::StatusOr<Result> next = db.Query("SELECT 7");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(std::get<int64_t>(next->cell(0, 0)), 7);
}

TEST_P(NetworkDatabaseTest, ExecuteHonoursTheDeadlineToo) {
  absl::StatusOr<std::unique_ptr<Client>> impatient = Client::Create(
      {.target = daemon_->target(), .default_deadline = absl::Seconds(1)});
  ASSERT_TRUE(impatient.ok()) << impatient.status();
  absl::StatusOr<Connection> db = (*impatient)->Connect({.name = "db"});
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<connbroker::ExecuteResult> slept = db->Execute(sleep_sql_);
  ASSERT_FALSE(slept.ok());
  EXPECT_EQ(slept.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ObserveUntil(count_sleeping_sql_, 0, absl::Seconds(5)), 0);
  EXPECT_TRUE(db->Execute("SELECT 1").ok());
}

TEST_P(NetworkDatabaseTest, AKilledClientFreesItsBackend) {
  ChildProcess client({CONNBROKER_CLI_PATH, "query", "db", sleep_sql_},
                      {{"CONNBROKER_TARGET", daemon_->target()}}, data_.path(),
                      "");
  ASSERT_EQ(ObserveUntil(count_sleeping_sql_, 1, absl::Seconds(10)), 1);
  client.Signal(SIGKILL);
  client.Wait();
  EXPECT_EQ(ObserveUntil(count_sleeping_sql_, 0, absl::Seconds(5)), 0);
  EXPECT_TRUE(Connect("db").Query("SELECT 1").ok());
}

TEST_P(NetworkDatabaseTest, AClientKilledMidStreamFreesItsBackend) {
  // 50M rows: far more than the client reads before it dies.
  const std::string stream_mark = mark_ + "-stream";
  const std::string sql =
      GetParam() == "postgresql"
          ? absl::StrCat("SELECT g, '", stream_mark,
                         "' AS mark FROM generate_series(1, 50000000) g")
          : absl::StrCat("SELECT seq, '", stream_mark,
                         "' AS mark FROM seq_1_to_50000000");
  const std::string count_streaming =
      GetParam() == "postgresql"
          ? absl::StrCat(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND pid <> pg_backend_pid() AND query LIKE '%",
                stream_mark, "%'")
          : absl::StrCat(
                "SELECT count(*) FROM information_schema.processlist WHERE "
                "id <> CONNECTION_ID() AND info LIKE '%",
                stream_mark, "%'");
  ChildProcess client(
      {CONNBROKER_CLI_PATH, "query", "db", sql, "--format", "csv"},
      {{"CONNBROKER_TARGET", daemon_->target()}}, data_.path(), "");
  // The statement is running and its rows flowing to the client.
  ASSERT_EQ(ObserveUntil(count_streaming, 1, absl::Seconds(10)), 1);
  client.Signal(SIGKILL);
  client.Wait();
  EXPECT_EQ(ObserveUntil(count_streaming, 0, absl::Seconds(5)), 0);
  // The backend came back to the pool, clean.
  EXPECT_EQ(InUseAfterSettling("db"), 0);
  absl::StatusOr<Result> next = Connect("db").Query("SELECT 5");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(std::get<int64_t>(next->cell(0, 0)), 5);
}

TEST_P(NetworkDatabaseTest, AFullPoolAnswersResourceExhaustedNamingIt) {
  Connection small = Connect("small");
  // Holds the only backend of "small".
  StartSleeper(small);
  ASSERT_EQ(ObserveUntil(count_sleeping_sql_, 1, absl::Seconds(10)), 1);
  // A caller that gives up first leaves the queue at once.
  absl::StatusOr<Result> impatient =
      small.Query("SELECT 1", {.deadline = absl::Milliseconds(300)});
  ASSERT_FALSE(impatient.ok());
  EXPECT_EQ(impatient.status().code(), absl::StatusCode::kDeadlineExceeded);
  // The daemon sees the deadline pass on its own clock: a moment later, not
  // after the 60 s pool_timeout.
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (PoolOf("small").waiting() != 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(PoolOf("small").waiting(), 0);

  // With a pool_timeout shorter than the holder: RESOURCE_EXHAUSTED naming
  // the pool and its size. (Other kwargs: a connection of its own.)
  absl::StatusOr<Connection> quick = client_->Connect(
      {.name = "small",
       .kwargs = {{"create_engine_kwargs.pool_timeout", 0.2}}});
  ASSERT_TRUE(quick.ok()) << quick.status();
  StartSleeper(*quick);
  ASSERT_EQ(ObserveUntil(count_sleeping_sql_, 2, absl::Seconds(10)), 2);
  absl::StatusOr<Result> refused = quick->Query("SELECT 1");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("small"));
  EXPECT_THAT(refused.status().message(), HasSubstr("pool_size 1"));

  CancelSleepers();
  JoinThreads();
  EXPECT_TRUE(small.Query("SELECT 1").ok());
  EXPECT_TRUE(quick->Query("SELECT 1").ok());
}

TEST_P(NetworkDatabaseTest, OneBusyConnectionDoesNotStallTheOthers) {
  // The daemon runs with 4 workers. "small" has one backend, held by a
  // sleeping statement (which holds a worker while it runs); 64 more calls
  // queue for it. If a queued call held a worker, nothing else could run
  // until the sleep ends.
  Connection small = Connect("small");
  StartSleeper(small);
  ASSERT_EQ(ObserveUntil(count_sleeping_sql_, 1, absl::Seconds(10)), 1);
  constexpr int kQueued = 64;
  std::atomic<int> queued_ok{0};
  std::atomic<int> queued_failed{0};
  for (int i = 0; i < kQueued; ++i) {
    threads_.emplace_back([&] {
      absl::StatusOr<Result> r =
          small.Query("SELECT 1", {.deadline = absl::Seconds(60)});
      (r.ok() ? queued_ok : queued_failed).fetch_add(1);
    });
  }
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (PoolOf("small").waiting() < kQueued && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(PoolOf("small").waiting(), kQueued);

  // Another connection, and a result-cache hit, are served meanwhile.
  Connection app = Connect("app");
  absl::StatusOr<Result> other = app.Query("SELECT 42");
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE(app.Query("SELECT 43", {.ttl = absl::Seconds(60)}).ok());
  absl::StatusOr<Result> hit =
      app.Query("SELECT 43", {.ttl = absl::Seconds(60)});
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_TRUE(hit->from_cache());
  Connection db = Connect("db");
  EXPECT_TRUE(db.Query("SELECT 1").ok());
  // ... while all 64 still wait.
  EXPECT_EQ(PoolOf("small").waiting(), kQueued);
  EXPECT_EQ(queued_ok.load() + queued_failed.load(), 0);

  // Cancel the holder on the server: the queue drains.
  CancelSleepers();
  JoinThreads();  // the holder and the 64
  EXPECT_EQ(queued_ok.load(), kQueued);
  EXPECT_EQ(PoolOf("small").waiting(), 0);
}

TEST_P(NetworkDatabaseTest, PrePingAndRecycleShowInTheStats) {
  // "load" pings a backend that sat idle before handing it out: one killed
  // on the server is replaced without the caller seeing an error.
  if (GetParam() == "mariadb") {
    ASSERT_TRUE(
        Connect("db").Execute("CREATE DATABASE IF NOT EXISTS cb_load").ok());
  }
  Connection load = Connect("load");
  ASSERT_TRUE(load.Query("SELECT 1").ok());
  ASSERT_EQ(PoolOf("load").idle(), 1);
  Connection observer = Connect("observer");
  if (GetParam() == "postgresql") {
    ASSERT_TRUE(observer
                    .Query("SELECT pg_terminate_backend(pid) FROM "
                           "pg_stat_activity WHERE application_name = "
                           "'cb_load'")
                    .ok());
  } else {
    absl::StatusOr<Result> ids = observer.Query(
        "SELECT id FROM information_schema.processlist WHERE db = 'cb_load'");
    ASSERT_TRUE(ids.ok()) << ids.status();
    for (size_t i = 0; i < ids->num_rows(); ++i) {
      ASSERT_TRUE(observer
                      .Execute(absl::StrCat("KILL ",
                                            std::get<int64_t>(ids->cell(i, 0))))
                      .ok());
    }
  }
  ASSERT_EQ(ObserveUntil(backend_.count_load_sessions_sql, 0, absl::Seconds(5)),
            0);
  // pre_ping_after is 1 s by default: wait out that much idleness, a
  // property of the pool, not a race.
  absl::SleepFor(absl::Milliseconds(1100));
  absl::StatusOr<Result> after = load.Query("SELECT 2");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->backend_executions(), 1);  // no retry was needed
  EXPECT_EQ(PoolOf("load").pre_ping_failures(), 1);

  // pool_recycle: a backend older than 1 s is closed instead of reused.
  absl::StatusOr<Connection> recycled = client_->Connect(
      {.name = "db", .kwargs = {{"create_engine_kwargs.pool_recycle", 1.0}}});
  ASSERT_TRUE(recycled.ok()) << recycled.status();
  ASSERT_TRUE(recycled->Query("SELECT 1").ok());
  absl::SleepFor(absl::Milliseconds(1100));
  ASSERT_TRUE(recycled->Query("SELECT 1").ok());
  absl::StatusOr<v1::ListConnectionsResponse> list = client_->ListConnections();
  ASSERT_TRUE(list.ok());
  int64_t recycled_total = 0;
  for (const v1::ConnectionInfo& info : list->connections()) {
    if (info.handle() == recycled->handle()) {
      recycled_total = info.pool().recycled();
    }
  }
  EXPECT_EQ(recycled_total, 1);
}

TEST_P(NetworkDatabaseTest, ClientsCannotRedirectAConfiguredSection) {
  for (const char* key : {"host", "port", "database", "url", "username"}) {
    ProcessResult redirected =
        daemon_->Cli({"query", "db", "SELECT 1", "--kwarg",
                      absl::StrCat(key, "=elsewhere-", backend_.password)});
    EXPECT_EQ(redirected.exit_code, 1) << key;
    EXPECT_THAT(redirected.err, HasSubstr("PERMISSION_DENIED")) << key;
    EXPECT_THAT(redirected.err, HasSubstr(key));
    EXPECT_THAT(redirected.err, Not(HasSubstr(backend_.password)));
  }
  // A made-up name with a url of the client's choosing is not opened.
  ProcessResult ad_hoc =
      daemon_->Cli({"query", "made_up", "SELECT 1", "--type", "sql", "--kwarg",
                    absl::StrCat("url=sqlite:///", data_.path(), "/other.db")});
  EXPECT_EQ(ad_hoc.exit_code, 1);
  EXPECT_THAT(ad_hoc.err, HasSubstr("PERMISSION_DENIED"));
  EXPECT_FALSE(std::filesystem::exists(data_.path() + "/other.db"));
  // Pool tuning stays a client's choice.
  ProcessResult tuned = daemon_->Cli({"query", "db", "SELECT 1", "--kwarg",
                                      "create_engine_kwargs.pool_size=2"});
  EXPECT_EQ(tuned.exit_code, 0) << tuned.err;
}

TEST_P(NetworkDatabaseTest, ListingShowsThePoolAndMasksThePassword) {
  ASSERT_TRUE(Connect("db").Query("SELECT 1").ok());
  ProcessResult table = daemon_->Cli({"connections"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("***"));
  EXPECT_THAT(table.out, HasSubstr("pool used/idle/open/max"));
  EXPECT_THAT(table.out, Not(HasSubstr(backend_.password)));
  v1::PoolStats pool = PoolOf("db");
  EXPECT_GE(pool.open(), 1);
  EXPECT_EQ(pool.idle(), pool.open());
  EXPECT_EQ(pool.max_size(), 15);  // pool_size 5 + max_overflow 10
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr(backend_.password)));
}

INSTANTIATE_TEST_SUITE_P(Servers, NetworkDatabaseTest,
                         ::testing::Values("postgresql", "mariadb"),
                         ServerName);

}  // namespace
}  // namespace connbroker::testing
