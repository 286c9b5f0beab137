// Integration tests: a real connbrokerd on a temporary Unix socket, driven by
// separate connbroker client processes (and, where said, by the C++ client
// library in this process). No fakes: real SQLite files, real sockets.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "SQLiteCpp/SQLiteCpp.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"

namespace connbroker::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPassword[] = "hunter2-s3cr3t";

// A secrets file with a SQLite connection (file), an in-memory one, a
// session-scoped one and a PostgreSQL one that carries a password.
std::string SecretsToml(const std::string& dir) {
  return absl::StrCat(R"([connections.app]
type = "sql"
url = "sqlite:///)",
                      dir, R"(/app.db"

[connections.mem]
url = "sqlite://"
type = "streamlit.connections.SQLConnection"

[connections.private]
type = "sql"
dialect = "sqlite"
database = ")",
                      dir, R"(/private.db"
scope = "session"

[connections.secretive]
type = "sql"
url = "sqlite:///)",
                      dir, R"(/secretive.db"
password = ")",
                      kPassword, R"("
token = ")",
                      kPassword, R"("

[connections.warehouse]
type = "sql"
url = "postgresql://analyst:)",
                      kPassword, R"(@127.0.0.1:1/warehouse"
)");
}

class BrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    secrets_ = data_.Write("secrets.toml", SecretsToml(data_.path()));
    daemon_ = Daemon::Start({.secrets_files = {secrets_}});
    ASSERT_NE(daemon_, nullptr);
  }

  ProcessResult Cli(const std::vector<std::string>& args) {
    return daemon_->Cli(args);
  }

  // Runs a CLI command that must succeed and print JSON.
  google::protobuf::Struct CliJson(std::vector<std::string> args) {
    args.push_back("--format");
    args.push_back("json");
    ProcessResult result = Cli(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return ParseJson(result.out);
  }

  // Backends ever opened by the live connections named `name`.
  double PoolOpenedTotal(const std::string& name) {
    google::protobuf::Struct listing = CliJson({"connections"});
    double total = 0;
    for (const auto& row :
         listing.fields().at("connections").list_value().values()) {
      const auto& fields = row.struct_value().fields();
      if (fields.at("name").string_value() != name) continue;
      auto pool = fields.find("pool");
      if (pool == fields.end()) continue;
      total += Number(pool->second.struct_value(), "opened_total");
    }
    return total;
  }

  TempDir data_;
  std::string secrets_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(BrokerTest, TwoClientProcessesShareOneConnection) {
  google::protobuf::Struct first = CliJson({"connect", "app"});
  google::protobuf::Struct second = CliJson({"connect", "app"});
  EXPECT_FALSE(Text(first, "handle").empty());
  EXPECT_EQ(Text(first, "handle"), Text(second, "handle"));
  EXPECT_TRUE(first.fields().at("created").bool_value());
  EXPECT_FALSE(second.fields().at("created").bool_value());
  EXPECT_EQ(Text(first, "type"), "sql");

  google::protobuf::Struct stats = daemon_->Stats();
  EXPECT_EQ(Number(stats, "connections_live"), 1);
  EXPECT_EQ(Number(stats, "connections_created"), 1);
  EXPECT_EQ(Number(stats, "connect_calls"), 2);
}

TEST_F(BrokerTest, KwargsOrderAndTypeAliasGiveTheSameConnection) {
  google::protobuf::Struct a =
      CliJson({"connect", "mem", "--kwarg", "create_engine_kwargs.echo=true",
               "--kwarg", "create_engine_kwargs.pool_size=2"});
  google::protobuf::Struct b =
      CliJson({"connect", "mem", "--kwarg", "create_engine_kwargs.pool_size=2",
               "--kwarg", "create_engine_kwargs.echo=true"});
  google::protobuf::Struct c = CliJson(
      {"connect", "mem", "--kwarg", "create_engine_kwargs.pool_size=3"});
  EXPECT_EQ(Text(a, "handle"), Text(b, "handle"));
  EXPECT_NE(Text(a, "handle"), Text(c, "handle"));
}

TEST_F(BrokerTest, QueryReturnsTypedColumnsAcrossBatches) {
  ASSERT_EQ(Cli({"execute", "app",
                 "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, x REAL)"})
                .exit_code,
            0);
  ASSERT_EQ(Cli({"execute", "app",
                 "WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 "
                 "FROM s WHERE v < 2500) "
                 "INSERT INTO t (name, x) SELECT 'n' || v, v * 0.5 FROM s"})
                .exit_code,
            0);
  google::protobuf::Struct result = CliJson(
      {"query", "app", "SELECT id, name, x FROM t WHERE id > ? ORDER BY id",
       "--param", "10", "--chunk-rows", "1000"});
  EXPECT_EQ(Number(result, "row_count"), 2490);
  const auto& rows = result.fields().at("rows").list_value();
  ASSERT_EQ(rows.values_size(), 2490);
  const auto& first = rows.values(0).list_value();
  EXPECT_EQ(first.values(0).number_value(), 11);
  EXPECT_EQ(first.values(1).string_value(), "n11");
  EXPECT_EQ(first.values(2).number_value(), 5.5);
  const auto& columns = result.fields().at("columns").list_value();
  ASSERT_EQ(columns.values_size(), 3);
  EXPECT_EQ(Text(columns.values(1).struct_value(), "name"), "name");
  EXPECT_EQ(Text(columns.values(1).struct_value(), "type"), "TEXT");
}

TEST_F(BrokerTest, ResultCacheHitThenReset) {
  ASSERT_EQ(Cli({"execute", "app", "CREATE TABLE c (v INTEGER)"}).exit_code, 0);
  ASSERT_EQ(Cli({"execute", "app", "INSERT INTO c VALUES (1)"}).exit_code, 0);
  google::protobuf::Struct miss =
      CliJson({"query", "app", "SELECT sum(v) AS s FROM c", "--ttl", "600"});
  EXPECT_FALSE(miss.fields().at("from_cache").bool_value());
  ASSERT_EQ(Cli({"execute", "app", "INSERT INTO c VALUES (41)"}).exit_code, 0);
  google::protobuf::Struct hit =
      CliJson({"query", "app", "SELECT sum(v) AS s FROM c", "--ttl", "600"});
  EXPECT_TRUE(hit.fields().at("from_cache").bool_value());
  // The cached value, not the table's current one.
  EXPECT_EQ(Cell(hit, 0, 0).number_value(), 1);
  google::protobuf::Struct stats = daemon_->Stats();
  EXPECT_EQ(Number(stats, "result_cache_hits"), 1);

  ASSERT_EQ(Cli({"reset", "app"}).exit_code, 0);
  google::protobuf::Struct after =
      CliJson({"query", "app", "SELECT sum(v) AS s FROM c", "--ttl", "600"});
  EXPECT_FALSE(after.fields().at("from_cache").bool_value());
  EXPECT_EQ(Cell(after, 0, 0).number_value(), 42);
}

TEST_F(BrokerTest, CachedResultExpiresAfterItsTtl) {
  // 2 s: long enough that the second run lands inside it even on a loaded
  // CI machine, short enough to wait out.
  const std::vector<std::string> query = {
      "query", "mem", "SELECT 42 AS answer", "--ttl", "2", "--format", "json"};
  ProcessResult first = Cli(query);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_FALSE(ParseJson(first.out).fields().at("from_cache").bool_value());
  ProcessResult second = Cli(query);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_TRUE(ParseJson(second.out).fields().at("from_cache").bool_value());
  // Ask until the answer comes from the database again (bounded): every
  // answer before that must be the cached one, and exactly one more
  // execution must happen once the ttl has passed.
  double runs_before = Number(daemon_->Stats(), "backend_executions");
  bool fresh = false;
  absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!fresh && absl::Now() < give_up) {
    ProcessResult again = Cli(query);
    ASSERT_EQ(again.exit_code, 0) << again.err;
    fresh = !ParseJson(again.out).fields().at("from_cache").bool_value();
  }
  EXPECT_TRUE(fresh) << "the cached result never expired";
  EXPECT_EQ(Number(daemon_->Stats(), "backend_executions") - runs_before, 1);
}

TEST_F(BrokerTest, SingleFlightRunsTheQueryOnce) {
  // A query slow enough that the clients overlap; whether a client joins the
  // flight or hits the cache afterwards, the database runs it once.
  const std::string sql =
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
      "WHERE i < 300000) SELECT count(*) AS c, sum(i) AS s FROM n";
  double before = Number(daemon_->Stats(), "backend_executions");
  constexpr int kClients = 8;
  std::vector<std::unique_ptr<ChildProcess>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{CONNBROKER_CLI_PATH, "query", "mem", sql,
                                 "--ttl", "600", "--format", "json"},
        std::map<std::string, std::string>{
            {"CONNBROKER_TARGET", daemon_->target()}},
        data_.path(), ""));
  }
  int from_database = 0;
  for (auto& client : clients) {
    ProcessResult result = client->Wait();
    ASSERT_EQ(result.exit_code, 0) << result.err;
    google::protobuf::Struct parsed = ParseJson(result.out);
    EXPECT_EQ(Cell(parsed, 0, 0).number_value(), 300000);
    if (!parsed.fields().at("from_cache").bool_value()) ++from_database;
  }
  EXPECT_EQ(from_database, 1);
  google::protobuf::Struct stats = daemon_->Stats();
  EXPECT_EQ(Number(stats, "backend_executions") - before, 1);
  EXPECT_EQ(Number(stats, "result_cache_misses"), 1);
  EXPECT_EQ(
      Number(stats, "result_cache_hits") + Number(stats, "single_flight_joins"),
      kClients - 1);
}

TEST_F(BrokerTest, MaxEntriesEvictsTheOldestAndHandlesSurvive) {
  google::protobuf::Struct a =
      CliJson({"connect", "mem", "--max-entries", "1", "--kwarg",
               "create_engine_kwargs.pool_size=1"});
  google::protobuf::Struct b =
      CliJson({"connect", "mem", "--max-entries", "1", "--kwarg",
               "create_engine_kwargs.pool_size=2"});
  EXPECT_NE(Text(a, "handle"), Text(b, "handle"));
  google::protobuf::Struct stats = daemon_->Stats();
  EXPECT_EQ(Number(stats, "evicted_max_entries"), 1);
  EXPECT_EQ(Number(stats, "connections_live"), 1);

  google::protobuf::Struct listing = CliJson({"connections"});
  int live = 0, evicted = 0;
  for (const auto& row :
       listing.fields().at("connections").list_value().values()) {
    const auto& fields = row.struct_value().fields();
    if (fields.at("handle").string_value() == Text(a, "handle")) {
      EXPECT_FALSE(fields.at("live").bool_value());
      ++evicted;
    } else if (fields.at("handle").string_value() == Text(b, "handle")) {
      EXPECT_TRUE(fields.at("live").bool_value());
      ++live;
    }
  }
  EXPECT_EQ(live, 1);
  EXPECT_EQ(evicted, 1);

  // The evicted handle still works: the connection is rebuilt (and, with
  // max_entries 1, now evicts the other).
  ProcessResult rebuilt =
      Cli({"query", "--handle", Text(a, "handle"), "SELECT 7 AS seven"});
  EXPECT_EQ(rebuilt.exit_code, 0) << rebuilt.err;
  EXPECT_THAT(rebuilt.out, HasSubstr("7"));
  EXPECT_EQ(Number(daemon_->Stats(), "evicted_max_entries"), 2);
}

TEST_F(BrokerTest, TtlEvictsTheConnectionAndTheHandleRebuildsIt) {
  google::protobuf::Struct first =
      CliJson({"connect", "mem", "--connect-ttl", "0.2"});
  EXPECT_TRUE(first.fields().at("created").bool_value());
  // Wait for the janitor to evict it: a condition with a deadline, not a
  // sleep that hopes a race went one way.
  double evicted = 0;
  absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (evicted == 0 && absl::Now() < give_up) {
    evicted = Number(daemon_->Stats(), "evicted_ttl");
  }
  ASSERT_EQ(evicted, 1) << "the connection was not evicted by its ttl";
  google::protobuf::Struct again =
      CliJson({"connect", "mem", "--connect-ttl", "0.2"});
  EXPECT_TRUE(again.fields().at("created").bool_value());
  EXPECT_EQ(Text(again, "handle"), Text(first, "handle"));
}

TEST_F(BrokerTest, ErrorsAreSpecificAndOthersKeepWorking) {
  ProcessResult unknown = Cli({"query", "nope", "SELECT 1"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(unknown.err, HasSubstr("nope"));
  EXPECT_THAT(unknown.err,
              HasSubstr("app, mem, private, secretive, warehouse"));

  ProcessResult bad_sql = Cli({"query", "app", "SELEC oops"});
  EXPECT_EQ(bad_sql.exit_code, 1);
  EXPECT_THAT(bad_sql.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(bad_sql.err, HasSubstr("syntax error"));

  ProcessResult no_table = Cli({"query", "app", "SELECT * FROM missing_table"});
  EXPECT_EQ(no_table.exit_code, 1);
  EXPECT_THAT(no_table.err, HasSubstr("no such table: missing_table"));

  // Nothing listens on port 1: the server's own refusal, retryable.
  ProcessResult unreachable = Cli({"connect", "warehouse"});
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_THAT(unreachable.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(unreachable.err, HasSubstr("127.0.0.1"));

  ProcessResult bad_type = Cli({"connect", "app", "--type", "mongo"});
  EXPECT_EQ(bad_type.exit_code, 1);
  EXPECT_THAT(bad_type.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(bad_type.err, HasSubstr("sql"));

  // The daemon still serves everyone.
  ProcessResult ok = Cli({"query", "app", "SELECT 1 + 1 AS two"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("2"));
  EXPECT_GE(Number(daemon_->Stats(), "errors"), 5);
}

TEST_F(BrokerTest, NoSecretInAnyReplyListingOrLog) {
  ProcessResult connect = Cli({"connect", "secretive", "--format", "json"});
  ASSERT_EQ(connect.exit_code, 0) << connect.err;
  ProcessResult warehouse = Cli({"connect", "warehouse"});
  ProcessResult with_kwarg =
      Cli({"connect", "mem", "--kwarg", absl::StrCat("password=", kPassword)});
  ProcessResult bad = Cli({"query", "secretive", "SELECT nonsense FROM x"});
  ProcessResult listing = Cli({"connections", "--format", "json"});
  ProcessResult stats = Cli({"stats", "--format", "json"});
  for (const ProcessResult* result :
       {&connect, &warehouse, &with_kwarg, &bad, &listing, &stats}) {
    EXPECT_THAT(result->out, Not(HasSubstr(kPassword)));
    EXPECT_THAT(result->err, Not(HasSubstr(kPassword)));
  }
  EXPECT_THAT(listing.out, HasSubstr("secretive"));
  EXPECT_THAT(warehouse.err, HasSubstr("UNAVAILABLE"));
  std::string log = daemon_->Log();
  EXPECT_THAT(log, HasSubstr("created"));  // it did log the connections
  EXPECT_THAT(log, Not(HasSubstr(kPassword)));
}

TEST_F(BrokerTest, AnEditedSecretsFileIsReloadedWithoutASignal) {
  ASSERT_EQ(Cli({"execute", "app", "CREATE TABLE kept (v INTEGER)"}).exit_code,
            0);
  ProcessResult before = Cli({"connect", "added"});
  EXPECT_EQ(before.exit_code, 1);
  EXPECT_THAT(before.err, HasSubstr("NOT_FOUND"));

  data_.Write(
      "secrets.toml",
      SecretsToml(data_.path()) +
          "\n[connections.added]\ntype = \"sql\"\nurl = \"sqlite://\"\n");
  // The janitor notices the edit within a second or so; wait (bounded) for
  // the new section to resolve rather than guess how long that takes.
  int exit_code = 1;
  absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (exit_code != 0 && absl::Now() < give_up) {
    exit_code = Cli({"connect", "added"}).exit_code;
  }
  EXPECT_EQ(exit_code, 0) << "the edited secrets file was not reloaded";
  EXPECT_THAT(daemon_->Log(), HasSubstr("changed on disk"));
  // Connections made before the reload keep working.
  ProcessResult kept = Cli({"query", "app", "SELECT count(*) AS n FROM kept"});
  EXPECT_EQ(kept.exit_code, 0) << kept.err;
}

TEST_F(BrokerTest, BrokenSecretsReloadKeepsTheLastGoodConfiguration) {
  ASSERT_EQ(Cli({"query", "app", "SELECT 1"}).exit_code, 0);
  data_.Write("secrets.toml",
              "[connections.app]\ntype = \"sql\"\nurl = = \"oops\"\n");
  double reloads_before = Number(daemon_->Stats(), "connect_calls");
  daemon_->Signal(SIGHUP);
  // The reload is done when stats report it (bounded wait on a condition).
  std::string error;
  absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (error.empty() && absl::Now() < give_up) {
    error = Text(daemon_->Stats(), "config_error");
  }
  EXPECT_THAT(error, HasSubstr("secrets.toml:3:"));
  ProcessResult still = Cli({"connect", "mem"});
  EXPECT_EQ(still.exit_code, 0) << still.err;
  EXPECT_GT(Number(daemon_->Stats(), "connect_calls"), reloads_before);
}

TEST_F(BrokerTest, LockContentionIsAbortedOnceAndSqlErrorsAreNotRetried) {
  // A short busy timeout, and another process (this one) holding SQLite's
  // write lock: the daemon's writer fails with "database is locked". That is
  // contention, not a broken backend: ABORTED after one attempt, and the
  // pool (its only writer included) is kept.
  const std::vector<std::string> fast = {
      "--kwarg", "create_engine_kwargs.connect_args.timeout=0.05"};
  auto with_fast = [&](std::vector<std::string> args) {
    args.insert(args.end(), fast.begin(), fast.end());
    return Cli(args);
  };
  ASSERT_EQ(
      with_fast({"execute", "app", "CREATE TABLE w (v INTEGER)"}).exit_code, 0);
  // A reader too, so that a reset of the pool would show as reopened
  // backends.
  ASSERT_EQ(with_fast({"query", "app", "SELECT count(*) FROM w"}).exit_code, 0);
  SQLite::Database holder(data_.path() + "/app.db", SQLite::OPEN_READWRITE);
  holder.exec("BEGIN IMMEDIATE");
  double retries_before = Number(daemon_->Stats(), "retries");
  double runs_before = Number(daemon_->Stats(), "backend_executions");
  double opened_before = PoolOpenedTotal("app");
  EXPECT_EQ(opened_before, 2);  // the writer and one reader

  ProcessResult locked =
      with_fast({"query", "app", "INSERT INTO w VALUES (1) RETURNING v"});
  EXPECT_EQ(locked.exit_code, 1);
  EXPECT_THAT(locked.err, HasSubstr("ABORTED"));
  EXPECT_THAT(locked.err, HasSubstr("database is locked"));
  google::protobuf::Struct stats = daemon_->Stats();
  EXPECT_EQ(Number(stats, "retries") - retries_before, 0);
  EXPECT_EQ(Number(stats, "backend_executions") - runs_before, 1);
  ProcessResult locked_write =
      with_fast({"execute", "app", "INSERT INTO w VALUES (2)"});
  EXPECT_EQ(locked_write.exit_code, 1);
  EXPECT_THAT(locked_write.err, HasSubstr("ABORTED"));

  // An SQL error is the statement's fault: one attempt, no retry.
  ProcessResult bad = with_fast({"query", "app", "SELECT * FROM nowhere"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_EQ(Number(daemon_->Stats(), "retries") - retries_before, 0);

  // Once the lock is gone the same statement goes through, on the backends
  // that were there before: none was closed and reopened.
  holder.exec("ROLLBACK");
  ProcessResult freed =
      with_fast({"query", "app", "INSERT INTO w VALUES (1) RETURNING v"});
  EXPECT_EQ(freed.exit_code, 0) << freed.err;
  EXPECT_EQ(PoolOpenedTotal("app"), opened_before);
}

TEST(BrokerWorkersTest, FollowersOfASlowQueryHoldNoWorker) {
  // Two workers. The leader of a cached query blocks on a lock this test
  // holds; three identical queries follow it. If followers held a worker
  // while waiting, an unrelated query would find none free until the lock
  // is released -- which this test does only after that query has answered.
  TempDir data;
  std::string secrets = data.Write(
      "secrets.toml",
      absl::StrCat("[connections.app]\ntype = \"sql\"\n", "url = \"sqlite:///",
                   data.path(), "/app.db\"\n"));
  std::unique_ptr<Daemon> daemon = Daemon::Start(
      {.secrets_files = {secrets}, .extra_args = {"--workers", "2"}});
  ASSERT_NE(daemon, nullptr);
  ASSERT_EQ(
      daemon->Cli({"execute", "app", "CREATE TABLE w (v INTEGER)"}).exit_code,
      0);
  SQLite::Database holder(data.path() + "/app.db", SQLite::OPEN_READWRITE);
  holder.exec("BEGIN IMMEDIATE");
  double runs_before = Number(daemon->Stats(), "backend_executions");

  constexpr int kClients = 4;
  std::vector<std::unique_ptr<ChildProcess>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{
            CONNBROKER_CLI_PATH, "query", "app",
            "INSERT INTO w VALUES (7) RETURNING v", "--ttl", "600", "--kwarg",
            "create_engine_kwargs.connect_args.timeout=60", "--format", "json"},
        std::map<std::string, std::string>{
            {"CONNBROKER_TARGET", daemon->target()}},
        data.path(), ""));
  }
  double queries = 0;
  absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (queries < kClients && absl::Now() < give_up) {
    queries = Number(daemon->Stats(), "queries");
  }
  ASSERT_EQ(queries, kClients);

  ProcessResult unrelated =
      daemon->Cli({"query", "app", "SELECT 5 AS five", "--deadline", "20s"});
  EXPECT_EQ(unrelated.exit_code, 0) << unrelated.err;
  EXPECT_THAT(unrelated.out, HasSubstr("5"));

  holder.exec("ROLLBACK");
  for (auto& client : clients) {
    ProcessResult result = client->Wait();
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(Cell(ParseJson(result.out), 0, 0).number_value(), 7);
  }
  google::protobuf::Struct stats = daemon->Stats();
  // One run of the INSERT for all four, one of the unrelated SELECT.
  EXPECT_EQ(Number(stats, "backend_executions") - runs_before, 2);
  EXPECT_EQ(
      Number(stats, "single_flight_joins") + Number(stats, "result_cache_hits"),
      kClients - 1);
}

TEST(BrokerStartupTest, MalformedSecretsFileIsReportedWithLineAndColumn) {
  TempDir data;
  std::string secrets = data.Write(
      "secrets.toml",
      "[connections.db]\ntype = \"sql\"\nurl = \"sqlite://\"\npassword = \n");
  std::unique_ptr<Daemon> daemon = Daemon::Start({.secrets_files = {secrets}});
  ASSERT_NE(daemon, nullptr);
  ProcessResult result = daemon->Cli({"connect", "db"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(result.err, HasSubstr(secrets + ":4:"));
  // Stats still answer, and say what is wrong.
  EXPECT_THAT(Text(daemon->Stats(), "config_error"), HasSubstr(":4:"));
}

TEST(BrokerStartupTest, StopsGracefullyOnSigterm) {
  std::unique_ptr<Daemon> daemon = Daemon::Start({});
  ASSERT_NE(daemon, nullptr);
  EXPECT_EQ(daemon->Stop(), 0);
  EXPECT_THAT(daemon->Log(), HasSubstr("stopped"));
}

}  // namespace
}  // namespace connbroker::testing
