// Integration tests against real PostgreSQL and MariaDB servers (started by
// tests/run.sh through tests/servers/db-servers.sh) behind a real
// connbrokerd: typed queries, deadlines and dead clients reaching the
// server, a server restart under load, pool limits, one busy connection not
// stalling the others, and the redirect policy.
//
// What the server itself sees is read through the daemon too, on a section
// of its own ("observer"): pg_stat_activity and MariaDB's processlist.
// Waits for the server to reach a state poll it with a bound; no test sleeps
// to make a race pass.
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
#include "tests/testing/db_servers.h"

namespace connbroker::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;

// One kind of server, and how to ask it about itself.
struct Backend {
  std::string label;  // "postgresql" / "mariadb": test names
  std::string url;    // of the test database, password included
  std::string password;
  // A 30 s sleep, marked so that tests running at the same time (and
  // leftovers of an earlier run) are told apart: "%s" is the mark.
  std::string sleep_template;
  // Counts statements running sleep_template with mark "%s" right now.
  std::string count_sleeping_template;
  // Cancels them (one row per statement).
  std::string cancel_sleeping_template;
  // Counts the server's sessions opened by the section "load".
  std::string count_load_sessions_sql;
  std::string restart_command;
  // Appended to the "load" section's url: marks its sessions.
  std::string load_marker;
};

std::optional<Backend> PostgresBackend() {
  std::optional<PgServer> server = PgServerFromEnv();
  if (!server) return std::nullopt;
  Backend b;
  b.label = "postgresql";
  b.url = server->Url();
  b.password = server->password;
  b.sleep_template = "SELECT pg_sleep(30), '%s' AS mark";
  b.count_sleeping_template =
      "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
      "query = 'SELECT pg_sleep(30), ''%s'' AS mark'";
  b.cancel_sleeping_template =
      "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = "
      "'SELECT pg_sleep(30), ''%s'' AS mark'";
  b.count_load_sessions_sql =
      "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
      "'cb_load'";
  b.restart_command = absl::StrCat("bash ", CONNBROKER_SOURCE_DIR,
                                   "/tests/servers/db-servers.sh restart-pg ",
                                   std::getenv("CONNBROKER_TEST_SERVERS_DIR"));
  b.load_marker = "?application_name=cb_load";
  return b;
}

std::optional<Backend> MariadbBackend() {
  std::optional<MysqlServer> server = MysqlServerFromEnv();
  if (!server) return std::nullopt;
  Backend b;
  b.label = "mariadb";
  b.url = server->Url();
  b.password = server->password;
  b.sleep_template = "SELECT SLEEP(30), '%s' AS mark";
  b.count_sleeping_template =
      "SELECT count(*) FROM information_schema.processlist WHERE "
      "info = 'SELECT SLEEP(30), ''%s'' AS mark'";
  // MariaDB has no pg_cancel_backend: the ids, for KILL QUERY.
  b.cancel_sleeping_template =
      "SELECT id FROM information_schema.processlist WHERE info = 'SELECT "
      "SLEEP(30), ''%s'' AS mark'";
  // MariaDB has no application name; the load section logs in to a
  // database of its own.
  b.count_load_sessions_sql =
      "SELECT count(*) FROM information_schema.processlist WHERE db = "
      "'cb_load'";
  b.restart_command =
      absl::StrCat("bash ", CONNBROKER_SOURCE_DIR,
                   "/tests/servers/db-servers.sh restart-mysql ",
                   std::getenv("CONNBROKER_TEST_SERVERS_DIR"));
  return b;
}

class NetworkDatabaseTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::optional<Backend> backend =
        GetParam() == "postgresql" ? PostgresBackend() : MariadbBackend();
    ASSERT_TRUE(backend.has_value()) << kNoServersMessage;
    backend_ = *backend;
    std::string load_url = backend_.url;
    if (GetParam() == "mariadb") {
      // The load section's own database (see count_load_sessions_sql).
      load_url = load_url.substr(0, load_url.rfind('/')) + "/cb_load";
    } else {
      load_url += backend_.load_marker;
    }
    secrets_ = data_.Write(
        "secrets.toml",
        absl::StrCat(
            "[connections.db]\ntype = \"sql\"\nurl = \"", backend_.url,
            "\"\n\n[connections.observer]\ntype = \"sql\"\nurl = \"",
            backend_.url, "\"\ncreate_engine_kwargs = { pool_size = 1 }\n\n",
            "[connections.small]\ntype = \"sql\"\nurl = \"", backend_.url,
            "\"\ncreate_engine_kwargs = { pool_size = 1, max_overflow = 0, "
            "pool_timeout = 60 }\n\n",
            "[connections.load]\ntype = \"sql\"\nurl = \"", load_url,
            "\"\ncreate_engine_kwargs = { pool_size = 2, max_overflow = 2, "
            "pool_pre_ping = true }\n\n",
            "[connections.app]\ntype = \"sql\"\nurl = \"sqlite:///",
            data_.path(), "/app.db\"\n"));
    mark_ = absl::StrCat(
        ::testing::UnitTest::GetInstance()->current_test_info()->name(), "-",
        ::getpid());
    mark_ = absl::StrReplaceAll(mark_, {{"/", "_"}});
    sleep_sql_ = absl::StrReplaceAll(backend_.sleep_template, {{"%s", mark_}});
    count_sleeping_sql_ =
        absl::StrReplaceAll(backend_.count_sleeping_template, {{"%s", mark_}});
    daemon_ = Daemon::Start(
        {.secrets_files = {secrets_}, .extra_args = {"--workers", "4"}});
    ASSERT_NE(daemon_, nullptr);
    client_ = NewClient();
    ASSERT_NE(client_, nullptr);
  }

  void TearDown() override {
    // Whatever a failed test left sleeping on the server ends now, and the
    // threads waiting on it with it.
    if (daemon_ != nullptr && client_ != nullptr) CancelSleepers();
    for (std::thread& thread : threads_) thread.join();
  }

  // Runs the marked sleep on `connection` in a thread of its own; it ends
  // with an error when CancelSleepers (or TearDown) cancels it.
  void StartSleeper(Connection connection) {
    threads_.emplace_back([this, connection] {
      absl::StatusOr<Result> held =
          connection.Query(sleep_sql_, {.deadline = absl::Seconds(40)});
      EXPECT_FALSE(held.ok());
    });
  }

  // Cancels every marked sleep on the server, from the server's side.
  void CancelSleepers() {
    Connection observer = Connect("observer");
    absl::StatusOr<Result> rows = observer.Query(absl::StrReplaceAll(
        backend_.cancel_sleeping_template, {{"%s", mark_}}));
    ASSERT_TRUE(rows.ok()) << rows.status();
    if (GetParam() == "mariadb") {
      for (size_t i = 0; i < rows->num_rows(); ++i) {
        EXPECT_TRUE(observer
                        .Execute(absl::StrCat(
                            "KILL QUERY ", std::get<int64_t>(rows->cell(i, 0))))
                        .ok());
      }
    }
  }

  void JoinThreads() {
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
  }

  std::unique_ptr<Client> NewClient() {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create({.target = daemon_->target()});
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  Connection Connect(const std::string& name) {
    absl::StatusOr<Connection> connection = client_->Connect({.name = name});
    EXPECT_TRUE(connection.ok()) << name << ": " << connection.status();
    return *connection;
  }

  // One integer from `sql` on the observer connection (-1 on failure).
  int64_t Observe(const std::string& sql) {
    absl::StatusOr<Result> result = Connect("observer").Query(sql);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok() || result->num_rows() != 1) return -1;
    Value cell = result->cell(0, 0);
    if (const int64_t* n = std::get_if<int64_t>(&cell)) return *n;
    return -1;
  }

  // Polls `sql` on the observer until it answers `want` or `bound` passes;
  // returns the last answer.
  int64_t ObserveUntil(const std::string& sql, int64_t want,
                       absl::Duration bound) {
    const absl::Time give_up = absl::Now() + bound;
    int64_t seen = Observe(sql);
    while (seen != want && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(20));
      seen = Observe(sql);
    }
    return seen;
  }

  // The pool of the live connection named `name`.
  v1::PoolStats PoolOf(const std::string& name) {
    absl::StatusOr<v1::ListConnectionsResponse> list =
        client_->ListConnections();
    EXPECT_TRUE(list.ok()) << list.status();
    if (list.ok()) {
      for (const v1::ConnectionInfo& info : list->connections()) {
        if (info.name() == name && info.live()) return info.pool();
      }
    }
    ADD_FAILURE() << "no live connection " << name;
    return {};
  }

  Backend backend_;
  std::string mark_;
  std::string sleep_sql_;
  std::string count_sleeping_sql_;
  std::vector<std::thread> threads_;
  TempDir data_;
  std::string secrets_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

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
  EXPECT_TRUE(db.Query("SELECT 1").ok());
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
  v1::PoolStats pool = PoolOf("db");
  EXPECT_EQ(pool.in_use(), 0);
  absl::StatusOr<Result> next = db.Query("SELECT 7");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(std::get<int64_t>(next->cell(0, 0)), 7);
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

TEST_P(NetworkDatabaseTest, AServerRestartUnderLoadRecoversWithoutLeaks) {
  if (GetParam() == "mariadb") {
    Connection db = Connect("db");
    ASSERT_TRUE(db.Execute("CREATE DATABASE IF NOT EXISTS cb_load").ok());
  }
  // Client processes and threads query "load" in a loop; the server
  // restarts under them.
  std::atomic<bool> restarted{false};
  std::atomic<bool> stop{false};
  absl::Mutex mu;
  std::vector<std::string> unexpected;  // errors other than UNAVAILABLE
  std::atomic<int> ok_after_restart{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      std::unique_ptr<Client> client = NewClient();
      absl::StatusOr<Connection> load = client->Connect({.name = "load"});
      if (!load.ok()) return;
      while (!stop.load()) {
        absl::StatusOr<Result> r =
            load->Query("SELECT 1", {.deadline = absl::Seconds(10)});
        if (r.ok()) {
          if (restarted.load()) ok_after_restart.fetch_add(1);
          continue;
        }
        failures.fetch_add(1);
        if (r.status().code() != absl::StatusCode::kUnavailable) {
          absl::MutexLock lock(&mu);
          unexpected.push_back(r.status().ToString());
        }
      }
    });
  }
  // And separate client processes, each running queries until the end.
  std::vector<std::unique_ptr<ChildProcess>> processes;
  for (int i = 0; i < 2; ++i) {
    processes.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{
            "/bin/sh", "-c",
            absl::StrCat("while [ ! -e ", data_.path(), "/stop ]; do ",
                         CONNBROKER_CLI_PATH,
                         " query load 'SELECT 1' --target ", daemon_->target(),
                         " >/dev/null 2>>", data_.path(), "/cli-errors-", i,
                         " || true; done")},
        std::map<std::string, std::string>{}, data_.path(), ""));
  }
  EXPECT_EQ(std::system(backend_.restart_command.c_str()), 0);
  restarted = true;
  // Every thread recovers by itself: no daemon or client restart.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (ok_after_restart.load() < 200 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  data_.Write("stop", "");
  for (auto& process : processes) process->Wait();
  EXPECT_GE(ok_after_restart.load(), 200);
  {
    absl::MutexLock lock(&mu);
    EXPECT_THAT(unexpected, ::testing::IsEmpty());
  }
  // The client processes saw only UNAVAILABLE, if anything.
  for (int i = 0; i < 2; ++i) {
    std::string errors =
        ReadFile(absl::StrCat(data_.path(), "/cli-errors-", i));
    EXPECT_THAT(errors, Not(HasSubstr("INTERNAL")));
    EXPECT_THAT(errors, Not(HasSubstr("INVALID_ARGUMENT")));
  }
  // No backend leaked: the server counts no more sessions of "load" than
  // its pool may hold (pool_size 2 + max_overflow 2), and the daemon's
  // pool agrees with the server.
  const int64_t sessions = Observe(backend_.count_load_sessions_sql);
  EXPECT_LE(sessions, 4);
  v1::PoolStats pool = PoolOf("load");
  EXPECT_EQ(pool.open(), sessions);
  EXPECT_EQ(pool.in_use(), 0);
  EXPECT_GE(pool.opened_total(), 2);
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
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace connbroker::testing
