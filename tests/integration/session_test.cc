// The Session stream through a real daemon: pipelining, cancels, and
// transactions pinned to a backend on SQLite, PostgreSQL and MariaDB --
// commit, rollback, isolation from other client processes, rollback when the
// client process is killed, the idle-in-transaction timeout, and a backend
// that breaks inside a transaction.
#include <signal.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"
#include "tests/integration/session_stream.h"
#include "tests/testing/db_servers.h"
#include "tests/testing/temp_dir.h"

namespace connbroker::testing {
namespace {

// The int64 in row `row` of column 0 of an answer's batches (-1 if none).
int64_t IntAt(const std::vector<v1::SessionResponse>& answer, int row = 0) {
  for (const v1::SessionResponse& message : answer) {
    if (!message.has_batch() || message.batch().row_count() <= row) continue;
    const v1::ColumnVector& column = message.batch().columns(0);
    if (column.has_int64s()) return column.int64s().values(row);
    if (column.has_texts()) return std::stoll(column.texts().values(row));
  }
  return -1;
}

std::string ErrorOf(const std::vector<v1::SessionResponse>& answer) {
  if (answer.empty()) return "(no answer: the stream ended)";
  return answer.back().has_error() ? answer.back().error().message() : "";
}

int CodeOf(const std::vector<v1::SessionResponse>& answer) {
  if (answer.empty() || !answer.back().has_error()) return 0;
  return answer.back().error().code();
}

v1::SessionRequest Begin(const std::string& name) {
  v1::SessionRequest request;
  request.mutable_begin()->mutable_target()->mutable_connect()->set_name(name);
  return request;
}

v1::SessionRequest Commit() {
  v1::SessionRequest request;
  request.mutable_commit();
  return request;
}

v1::SessionRequest Rollback() {
  v1::SessionRequest request;
  request.mutable_rollback();
  return request;
}

// ---------------------------------------------------------------------------
// Pipelining and cancels (SQLite: what is tested is the stream, not the
// database).

class SessionStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    secrets_ = dir_.Write(
        "secrets.toml",
        absl::StrCat("[connections.app]\ntype = \"sql\"\nurl = \"sqlite:///",
                     dir_.path(), "/app.db\"\n"));
    daemon_ = Daemon::Start({.secrets_files = {secrets_}});
    ASSERT_NE(daemon_, nullptr);
  }

  TempDir dir_;
  std::string secrets_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(SessionStreamTest, PipelinedRequestsAreAnsweredInOrderByTheirIds) {
  SessionStream stream(daemon_->target());
  constexpr int kRequests = 200;  // past max_pipelined_requests (64)
  for (int i = 0; i < kRequests; ++i) {
    v1::SessionRequest request = QueryOn("app", "SELECT ?1 * 2");
    request.set_id(1000 + i);
    request.mutable_query()
        ->mutable_params()
        ->add_positional()
        ->set_int64_value(i);
    ASSERT_TRUE(stream.Send(request)) << i;
  }
  stream.WritesDone();
  for (int i = 0; i < kRequests; ++i) {
    v1::SessionResponse message;
    ASSERT_TRUE(stream.Read(&message)) << i;
    // A small result is one message: schema, rows and summary together.
    EXPECT_EQ(message.id(), static_cast<uint64_t>(1000 + i));
    ASSERT_FALSE(message.has_error()) << message.error().message();
    EXPECT_TRUE(message.has_schema());
    EXPECT_TRUE(message.has_summary());
    EXPECT_EQ(IntAt({message}), 2 * i);
  }
  v1::SessionResponse extra;
  EXPECT_FALSE(stream.Read(&extra));
  EXPECT_TRUE(stream.Finish().ok());
}

TEST_F(SessionStreamTest, CachedAndUncachedPipelinedQueriesKeepTheirOrder) {
  SessionStream stream(daemon_->target());
  v1::SessionRequest connect;
  connect.mutable_connect()->set_name("app");
  std::vector<v1::SessionResponse> connected = stream.Call(1, connect);
  ASSERT_EQ(ErrorOf(connected), "");
  const std::string handle = connected.back().connected().handle();
  // Cached answers may be served without a worker; they must still wait
  // their turn behind the uncached ones sent before them.
  constexpr int kRequests = 120;
  for (int i = 0; i < kRequests; ++i) {
    v1::SessionRequest request;
    request.set_id(100 + i);
    v1::QueryRequest* query = request.mutable_query();
    query->mutable_target()->set_handle(handle);
    query->set_sql("SELECT ?1 + 0");
    query->mutable_params()->add_positional()->set_int64_value(i % 3);
    if (i % 2 == 0) query->set_ttl_seconds(600);
    ASSERT_TRUE(stream.Send(request));
  }
  int hits = 0;
  for (int i = 0; i < kRequests; ++i) {
    std::vector<v1::SessionResponse> answer = stream.NextAnswer();
    ASSERT_FALSE(answer.empty());
    EXPECT_EQ(answer.back().id(), static_cast<uint64_t>(100 + i));
    EXPECT_EQ(IntAt(answer), i % 3) << ErrorOf(answer);
    ASSERT_TRUE(answer.back().has_summary());
    if (answer.back().summary().from_cache()) {
      ++hits;
      EXPECT_EQ(i % 2, 0) << "an uncached query came from the cache";
    }
  }
  // 60 cached queries of 3 distinct values: all but the first of each hit.
  EXPECT_EQ(hits, 57);
}

TEST_F(SessionStreamTest,
       ALargeResultComesInSeveralMessagesEndingInTheSummary) {
  SessionStream stream(daemon_->target());
  v1::SessionRequest request = QueryOn(
      "app",
      "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x "
      "< 5000) SELECT x FROM n");
  request.mutable_query()->set_chunk_rows(1000);
  std::vector<v1::SessionResponse> answer = stream.Call(7, request);
  ASSERT_EQ(answer.size(), 5u);
  int64_t rows = 0;
  for (const v1::SessionResponse& message : answer) {
    EXPECT_EQ(message.id(), 7u);
    EXPECT_TRUE(message.has_batch());
    rows += message.batch().row_count();
  }
  EXPECT_TRUE(answer.front().has_schema());
  EXPECT_TRUE(answer.back().has_summary());
  EXPECT_EQ(answer.back().summary().row_count(), 5000);
  EXPECT_EQ(rows, 5000);
}

TEST_F(SessionStreamTest, ACancelStopsOnlyTheRequestItNames) {
  SessionStream stream(daemon_->target());
  // 1 runs until cancelled; 2 waits behind it and is cancelled before it
  // runs; 3 must still be answered.
  v1::SessionRequest endless =
      QueryOn("app",
              "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
              "SELECT count(*) FROM n");
  endless.set_id(1);
  v1::SessionRequest second = QueryOn("app", "SELECT 2");
  second.set_id(2);
  v1::SessionRequest third = QueryOn("app", "SELECT 3");
  third.set_id(3);
  v1::SessionRequest cancel_second;
  cancel_second.mutable_cancel()->set_id(2);
  v1::SessionRequest cancel_first;
  cancel_first.mutable_cancel()->set_id(1);
  for (const auto* request :
       {&endless, &second, &third, &cancel_second, &cancel_first}) {
    ASSERT_TRUE(stream.Send(*request));
  }
  std::vector<v1::SessionResponse> first_answer = stream.NextAnswer();
  ASSERT_FALSE(first_answer.empty());
  EXPECT_EQ(first_answer.back().id(), 1u);
  EXPECT_EQ(CodeOf(first_answer), grpc::StatusCode::CANCELLED)
      << ErrorOf(first_answer);
  std::vector<v1::SessionResponse> second_answer = stream.NextAnswer();
  ASSERT_FALSE(second_answer.empty());
  EXPECT_EQ(second_answer.back().id(), 2u);
  EXPECT_EQ(CodeOf(second_answer), grpc::StatusCode::CANCELLED);
  std::vector<v1::SessionResponse> third_answer = stream.NextAnswer();
  ASSERT_FALSE(third_answer.empty());
  EXPECT_EQ(third_answer.back().id(), 3u);
  EXPECT_EQ(IntAt(third_answer), 3) << ErrorOf(third_answer);
}

TEST_F(SessionStreamTest, ARequestPastItsTimeoutIsCancelledAndTheStreamGoesOn) {
  SessionStream stream(daemon_->target());
  v1::SessionRequest endless =
      QueryOn("app",
              "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
              "SELECT count(*) FROM n");
  endless.set_timeout_millis(200);
  std::vector<v1::SessionResponse> answer = stream.Call(1, endless);
  EXPECT_EQ(CodeOf(answer), grpc::StatusCode::DEADLINE_EXCEEDED)
      << ErrorOf(answer);
  EXPECT_EQ(IntAt(stream.Call(2, QueryOn("app", "SELECT 5"))), 5);
}

TEST_F(SessionStreamTest, AnUnknownNameIsAnAnswerNotTheEndOfTheStream) {
  SessionStream stream(daemon_->target());
  std::vector<v1::SessionResponse> answer =
      stream.Call(1, QueryOn("nope", "SELECT 1"));
  EXPECT_EQ(CodeOf(answer), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(ErrorOf(answer).find("app"), std::string::npos) << ErrorOf(answer);
  EXPECT_EQ(IntAt(stream.Call(2, QueryOn("app", "SELECT 4"))), 4);
}

TEST_F(SessionStreamTest, OneShotCallsKeepWorkingBesideAnOpenTransaction) {
  ASSERT_EQ(
      daemon_->Cli({"execute", "app", "CREATE TABLE t (x INTEGER)"}).exit_code,
      0);
  SessionStream stream(daemon_->target());
  ASSERT_EQ(ErrorOf(stream.Call(1, Begin("app"))), "");
  ASSERT_EQ(
      ErrorOf(stream.Call(2, ExecuteOn("app", "INSERT INTO t VALUES (1)"))),
      "");
  // One-shot reads run on readers, beside the writer the transaction holds.
  ProcessResult read = daemon_->Cli({"query", "app", "SELECT count(*) FROM t"});
  EXPECT_EQ(read.exit_code, 0) << read.err;
  EXPECT_NE(read.out.find("0"), std::string::npos) << read.out;
  ASSERT_EQ(ErrorOf(stream.Call(3, Commit())), "");
  ProcessResult after =
      daemon_->Cli({"query", "app", "SELECT count(*) AS n FROM t"});
  EXPECT_NE(after.out.find("1"), std::string::npos) << after.out;
}

TEST_F(SessionStreamTest, MalformedRequestsGetClearErrors) {
  SessionStream stream(daemon_->target());
  // No operation: an answer saying so; the stream goes on.
  v1::SessionRequest empty;
  std::vector<v1::SessionResponse> none = stream.Call(1, empty);
  EXPECT_EQ(CodeOf(none), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(ErrorOf(none).find("names no operation"), std::string::npos);
  // open is only for the first request.
  v1::SessionRequest open;
  open.mutable_open()->set_session("late");
  EXPECT_EQ(CodeOf(stream.Call(2, open)),
            grpc::StatusCode::FAILED_PRECONDITION);
  // A commit with no transaction open.
  EXPECT_EQ(CodeOf(stream.Call(3, Commit())),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(IntAt(stream.Call(4, QueryOn("app", "SELECT 6"))), 6);
  // Bytes that are no SessionRequest (invalid UTF-8 in a string field)
  // carry no id to answer: the stream ends, saying what it could not read.
  v1::SessionRequest garbled = QueryOn("app", "SELECT '\xff\xfe'");
  garbled.set_id(5);
  ASSERT_TRUE(stream.Send(garbled));
  v1::SessionResponse nothing;
  EXPECT_FALSE(stream.Read(&nothing));
  grpc::Status status = stream.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("connbroker.v1.SessionRequest"),
            std::string::npos)
      << status.error_message();
  // The daemon serves everyone else.
  ProcessResult after = daemon_->Cli({"query", "app", "SELECT 1"});
  EXPECT_EQ(after.exit_code, 0) << after.err;
}

TEST_F(SessionStreamTest, ADrainEndsIdleSessionsWithUnavailable) {
  SessionStream stream(daemon_->target());
  ASSERT_EQ(IntAt(stream.Call(1, QueryOn("app", "SELECT 1"))), 1);
  // The stream is idle, kept between calls: SIGTERM must not wait for it.
  daemon_->Signal(SIGTERM);
  v1::SessionResponse nothing;
  EXPECT_FALSE(stream.Read(&nothing));
  grpc::Status status = stream.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("shutting down"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(daemon_->Stop(), 0);
}

TEST_F(SessionStreamTest,
       SessionsPastMaxSessionsAreRefusedAndOneShotCallsStillWork) {
  std::string toml = dir_.Write("broker.toml", "[limits]\nmax_sessions = 2\n");
  std::unique_ptr<Daemon> daemon = Daemon::Start(
      {.secrets_files = {secrets_}, .extra_args = {"--config", toml}});
  ASSERT_NE(daemon, nullptr);
  v1::SessionRequest open;
  open.mutable_open();
  SessionStream first(daemon->target());
  SessionStream second(daemon->target());
  // Answered: both streams are open on the daemon now.
  ASSERT_EQ(ErrorOf(first.Call(1, open)), "");
  ASSERT_EQ(ErrorOf(second.Call(1, open)), "");
  SessionStream third(daemon->target());
  std::vector<v1::SessionResponse> refused = third.Call(1, open);
  EXPECT_TRUE(refused.empty());
  grpc::Status status = third.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("limits.max_sessions"),
            std::string::npos)
      << status.error_message();
  ProcessResult one_shot = daemon->Cli({"query", "app", "SELECT 1"});
  EXPECT_EQ(one_shot.exit_code, 0) << one_shot.err;
  // A stream that ends makes room.
  first.WritesDone();
  EXPECT_TRUE(first.Finish().ok());
  const absl::Time bound = absl::Now() + absl::Seconds(20);
  std::vector<v1::SessionResponse> opened;
  while (absl::Now() < bound) {
    SessionStream again(daemon->target());
    opened = again.Call(1, open);
    if (!opened.empty()) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(ErrorOf(opened), "");
}

// ---------------------------------------------------------------------------
// Transactions on every database.

struct Target {
  std::string url;
  // The backend's own id inside a transaction, and how the server sees a
  // backend of that id idle in a transaction (%d); empty for SQLite.
  std::string id_sql;
  std::string idle_in_transaction_sql;
  std::string terminate_sql;  // ends backend %d from the server's side
};

std::optional<Target> TargetFor(const std::string& database,
                                const TempDir& dir) {
  if (database == "sqlite") {
    return Target{absl::StrCat("sqlite:///", dir.path(), "/txn.db"), "", "",
                  ""};
  }
  if (database == "postgresql") {
    std::optional<PgServer> server = PgServerFromEnv();
    if (!server) return std::nullopt;
    return Target{server->Url(), "SELECT pg_backend_pid()",
                  "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND "
                  "state LIKE 'idle in transaction%'",
                  "SELECT pg_terminate_backend(%d)"};
  }
  std::optional<MysqlServer> server = MysqlServerFromEnv();
  if (!server) return std::nullopt;
  return Target{server->Url(), "SELECT CONNECTION_ID()",
                "SELECT count(*) FROM information_schema.innodb_trx WHERE "
                "trx_mysql_thread_id = %d",
                "KILL %d"};
}

class SessionTransactionTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::optional<Target> target = TargetFor(GetParam(), dir_);
    ASSERT_TRUE(target.has_value()) << kNoServersMessage;
    target_ = *target;
    table_ = absl::StrCat(
        "txn_", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
        "_", ::getpid());
    table_ = absl::StrReplaceAll(table_, {{"/", "_"}});
    std::string section =
        absl::StrCat("type = \"sql\"\nurl = \"", target_.url, "\"\n");
    secrets_ = dir_.Write(
        "secrets.toml",
        absl::StrCat("[connections.db]\n", section, "\n[connections.short]\n",
                     section, "\n[connections.observer]\n", section,
                     "create_engine_kwargs = { pool_size = 1 }\n"));
    broker_toml_ = dir_.Write("broker.toml",
                              "[transactions]\nidle_timeout = \"60s\"\n\n"
                              "[transactions.short]\nidle_timeout = \"1s\"\n");
    daemon_ = Daemon::Start({.secrets_files = {secrets_},
                             .extra_args = {"--config", broker_toml_}});
    ASSERT_NE(daemon_, nullptr);
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create({.target = daemon_->target()});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    ASSERT_TRUE(Run("db", absl::StrCat("CREATE TABLE ", table_,
                                       " (id INTEGER PRIMARY KEY, v TEXT)"))
                    .ok());
  }

  void TearDown() override {
    if (client_ != nullptr) {
      (void)Run("observer", absl::StrCat("DROP TABLE IF EXISTS ", table_));
    }
  }

  absl::Status Run(const std::string& name, const std::string& sql) {
    absl::StatusOr<Connection> connection = client_->Connect({.name = name});
    if (!connection.ok()) return connection.status();
    return connection->Execute(sql).status();
  }

  // Rows of the table as another client process sees them (the CLI).
  int64_t RowsSeenElsewhere() {
    ProcessResult result =
        daemon_->Cli({"query", "observer", "--format", "json",
                      absl::StrCat("SELECT count(*) AS n FROM ", table_)});
    EXPECT_EQ(result.exit_code, 0) << result.err;
    if (result.exit_code != 0) return -1;
    return static_cast<int64_t>(
        Cell(ParseJson(result.out), 0, 0).number_value());
  }

  int64_t Observe(const std::string& sql) {
    absl::StatusOr<Connection> observer =
        client_->Connect({.name = "observer"});
    if (!observer.ok()) return -1;
    absl::StatusOr<Result> result = observer->Query(sql);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok() || result->num_rows() == 0) return -1;
    const Value& cell = result->cell(0, 0);
    if (const int64_t* n = std::get_if<int64_t>(&cell)) return *n;
    if (const std::string* text = std::get_if<std::string>(&cell)) {
      return std::stoll(*text);
    }
    return -1;
  }

  // Polls the daemon's open transactions until `want` or 20 s.
  int64_t WaitForTransactionsOpen(int64_t want) {
    const absl::Time bound = absl::Now() + absl::Seconds(20);
    int64_t open = -1;
    while (absl::Now() < bound) {
      absl::StatusOr<v1::GetStatsResponse> stats = client_->Stats();
      if (stats.ok()) open = stats->transactions_open();
      if (open == want) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return open;
  }

  std::string Insert(int id) const {
    return absl::StrCat("INSERT INTO ", table_, " VALUES (", id, ", 'x')");
  }

  TempDir dir_;
  Target target_;
  std::string table_;
  std::string secrets_;
  std::string broker_toml_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

TEST_P(SessionTransactionTest, ACommittedWriteIsSeenElsewhereOnlyAfterCommit) {
  SessionStream stream(daemon_->target());
  std::vector<v1::SessionResponse> begun = stream.Call(1, Begin("db"));
  ASSERT_EQ(ErrorOf(begun), "");
  ASSERT_TRUE(begun.back().transaction().open());
  ASSERT_EQ(ErrorOf(stream.Call(2, ExecuteOn("db", Insert(1)))), "");
  // The transaction reads its own write; another process does not.
  EXPECT_EQ(
      IntAt(stream.Call(
          3, QueryOn("db", absl::StrCat("SELECT count(*) FROM ", table_)))),
      1);
  EXPECT_EQ(RowsSeenElsewhere(), 0);
  std::vector<v1::SessionResponse> committed = stream.Call(4, Commit());
  ASSERT_EQ(ErrorOf(committed), "");
  EXPECT_FALSE(committed.back().transaction().open());
  EXPECT_EQ(RowsSeenElsewhere(), 1);
  EXPECT_EQ(WaitForTransactionsOpen(0), 0);
}

TEST_P(SessionTransactionTest, RollbackDiscardsAndSqlBeginCommitWorkToo) {
  SessionStream stream(daemon_->target());
  ASSERT_EQ(ErrorOf(stream.Call(1, Begin("db"))), "");
  ASSERT_EQ(ErrorOf(stream.Call(2, ExecuteOn("db", Insert(1)))), "");
  std::vector<v1::SessionResponse> rolled = stream.Call(3, Rollback());
  ASSERT_EQ(ErrorOf(rolled), "");
  EXPECT_FALSE(rolled.back().transaction().open());
  EXPECT_EQ(RowsSeenElsewhere(), 0);

  // The same as SQL text, as a shell sends it.
  std::vector<v1::SessionResponse> begun = stream.Call(
      4,
      ExecuteOn("db", GetParam() == "sqlite" ? "BEGIN" : "START TRANSACTION"));
  ASSERT_EQ(ErrorOf(begun), "");
  EXPECT_TRUE(begun.back().transaction().open());
  ASSERT_EQ(ErrorOf(stream.Call(5, ExecuteOn("db", Insert(2)))), "");
  EXPECT_EQ(RowsSeenElsewhere(), 0);
  std::vector<v1::SessionResponse> committed =
      stream.Call(6, ExecuteOn("db", "COMMIT"));
  ASSERT_EQ(ErrorOf(committed), "");
  EXPECT_FALSE(committed.back().transaction().open());
  EXPECT_EQ(RowsSeenElsewhere(), 1);
}

TEST_P(SessionTransactionTest, TheStreamEndingRollsBack) {
  {
    SessionStream stream(daemon_->target());
    ASSERT_EQ(ErrorOf(stream.Call(1, Begin("db"))), "");
    ASSERT_EQ(ErrorOf(stream.Call(2, ExecuteOn("db", Insert(1)))), "");
    stream.WritesDone();
    EXPECT_TRUE(stream.Finish().ok());
  }
  EXPECT_EQ(WaitForTransactionsOpen(0), 0);
  EXPECT_EQ(RowsSeenElsewhere(), 0);
  // The backend went back clean: a write through it works.
  EXPECT_TRUE(Run("db", Insert(1)).ok());
}

TEST_P(SessionTransactionTest, AKilledClientProcessLeavesNoTransactionOpen) {
  std::vector<std::string> argv = {TXN_HOLDER_PATH, daemon_->target(), "db",
                                   Insert(1)};
  if (!target_.id_sql.empty()) argv.push_back(target_.id_sql);
  ChildProcess holder(argv, {}, dir_.path(), "");
  // Its "ready" line says the transaction is open (and on which backend).
  std::string ready;
  const absl::Time bound = absl::Now() + absl::Seconds(30);
  while (absl::Now() < bound) {
    ready = holder.StdoutSoFar();
    if (ready.find('\n') != std::string::npos) break;
    ready.clear();
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(ready.rfind("ready ", 0), 0u) << ready << holder.StderrSoFar();
  const int backend = std::stoi(ready.substr(6));
  EXPECT_EQ(WaitForTransactionsOpen(1), 1);
  if (!target_.idle_in_transaction_sql.empty()) {
    EXPECT_EQ(Observe(absl::StrReplaceAll(target_.idle_in_transaction_sql,
                                          {{"%d", absl::StrCat(backend)}})),
              1);
  }
  holder.Signal(SIGKILL);
  holder.Wait();
  EXPECT_EQ(WaitForTransactionsOpen(0), 0);
  if (!target_.idle_in_transaction_sql.empty()) {
    // Seen on the server: that backend is no longer in a transaction.
    // Polled with a bound, and no more often than every 150 ms: MariaDB
    // serves information_schema.innodb_trx from a cache it refreshes only
    // when nobody read it for 100 ms.
    const std::string sql = absl::StrReplaceAll(
        target_.idle_in_transaction_sql, {{"%d", absl::StrCat(backend)}});
    int64_t in_transaction = Observe(sql);
    const absl::Time settle = absl::Now() + absl::Seconds(10);
    while (in_transaction != 0 && absl::Now() < settle) {
      absl::SleepFor(absl::Milliseconds(150));
      in_transaction = Observe(sql);
    }
    EXPECT_EQ(in_transaction, 0);
  }
  EXPECT_EQ(RowsSeenElsewhere(), 0);
  EXPECT_TRUE(Run("db", Insert(1)).ok());
}

TEST_P(SessionTransactionTest, AnIdleTransactionIsRolledBackAndTheClientTold) {
  SessionStream stream(daemon_->target());
  ASSERT_EQ(ErrorOf(stream.Call(1, Begin("short"))), "");
  ASSERT_EQ(ErrorOf(stream.Call(2, ExecuteOn("short", Insert(1)))), "");
  // The notice comes unasked once the transaction idled 1 s.
  v1::SessionResponse notice;
  ASSERT_TRUE(stream.Read(&notice));
  EXPECT_EQ(notice.id(), 0u);
  ASSERT_TRUE(notice.has_notice());
  EXPECT_EQ(notice.notice().code(), grpc::StatusCode::ABORTED);
  EXPECT_NE(notice.notice().message().find("idle"), std::string::npos);
  EXPECT_EQ(RowsSeenElsewhere(), 0);
  // Statements on that connection fail until the client rolls back; they
  // must not run outside the transaction the client believes open.
  std::vector<v1::SessionResponse> refused =
      stream.Call(3, ExecuteOn("short", Insert(2)));
  EXPECT_EQ(CodeOf(refused), grpc::StatusCode::ABORTED) << ErrorOf(refused);
  EXPECT_EQ(ErrorOf(stream.Call(4, Rollback())), "");
  EXPECT_EQ(ErrorOf(stream.Call(5, ExecuteOn("short", Insert(3)))), "");
  EXPECT_EQ(RowsSeenElsewhere(), 1);
  absl::StatusOr<v1::GetStatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->idle_transactions_rolled_back(), 1);
}

// A database server whose backends can be killed from its side (SQLite's
// live in the daemon).
using ServerSessionTransactionTest = SessionTransactionTest;

TEST_P(ServerSessionTransactionTest,
       ABrokenBackendEndsTheTransactionWithoutARetry) {
  SessionStream stream(daemon_->target());
  ASSERT_EQ(ErrorOf(stream.Call(1, Begin("db"))), "");
  ASSERT_EQ(ErrorOf(stream.Call(2, ExecuteOn("db", Insert(1)))), "");
  const int64_t backend = IntAt(stream.Call(3, QueryOn("db", target_.id_sql)));
  ASSERT_GT(backend, 0);
  (void)Observe(absl::StrReplaceAll(target_.terminate_sql,
                                    {{"%d", absl::StrCat(backend)}}));
  std::vector<v1::SessionResponse> broken =
      stream.Call(4, ExecuteOn("db", Insert(2)));
  EXPECT_EQ(CodeOf(broken), grpc::StatusCode::UNAVAILABLE) << ErrorOf(broken);
  ASSERT_FALSE(broken.empty());
  EXPECT_TRUE(broken.back().has_transaction());
  EXPECT_FALSE(broken.back().transaction().open());
  // Nothing of the transaction was retried elsewhere.
  EXPECT_EQ(RowsSeenElsewhere(), 0);
  std::vector<v1::SessionResponse> refused =
      stream.Call(5, ExecuteOn("db", Insert(3)));
  EXPECT_EQ(CodeOf(refused), grpc::StatusCode::ABORTED) << ErrorOf(refused);
  EXPECT_EQ(ErrorOf(stream.Call(6, Rollback())), "");
  EXPECT_EQ(ErrorOf(stream.Call(7, ExecuteOn("db", Insert(4)))), "");
  EXPECT_EQ(RowsSeenElsewhere(), 1);
  EXPECT_EQ(WaitForTransactionsOpen(0), 0);
}

TEST_P(SessionTransactionTest, BeginOptionsReachTheDatabase) {
  SessionStream stream(daemon_->target());
  v1::SessionRequest read_only = Begin("db");
  read_only.mutable_begin()->set_read_only(true);
  read_only.mutable_begin()->set_isolation(v1::BeginRequest::SERIALIZABLE);
  ASSERT_EQ(ErrorOf(stream.Call(1, read_only)), "");
  if (GetParam() == "postgresql") {
    std::vector<v1::SessionResponse> isolation =
        stream.Call(3, QueryOn("db", "SHOW transaction_isolation"));
    ASSERT_FALSE(isolation.empty());
    ASSERT_TRUE(isolation.back().has_batch()) << ErrorOf(isolation);
    EXPECT_EQ(isolation.back().batch().columns(0).texts().values(0),
              "serializable");
  }
  // The database itself refuses a write in a read-only transaction.
  std::vector<v1::SessionResponse> write =
      stream.Call(2, ExecuteOn("db", Insert(1)));
  EXPECT_NE(CodeOf(write), 0) << "a write ran in a read-only transaction";
  ASSERT_EQ(ErrorOf(stream.Call(4, Rollback())), "");
  EXPECT_EQ(RowsSeenElsewhere(), 0);
  v1::SessionRequest deferrable = Begin("db");
  deferrable.mutable_begin()->set_deferrable(true);
  deferrable.mutable_begin()->set_read_only(true);
  deferrable.mutable_begin()->set_isolation(v1::BeginRequest::SERIALIZABLE);
  std::vector<v1::SessionResponse> deferred = stream.Call(5, deferrable);
  if (GetParam() == "postgresql") {
    EXPECT_EQ(ErrorOf(deferred), "");
    EXPECT_EQ(ErrorOf(stream.Call(6, Commit())), "");
  } else {
    EXPECT_EQ(CodeOf(deferred), grpc::StatusCode::INVALID_ARGUMENT)
        << ErrorOf(deferred);
  }
  EXPECT_EQ(WaitForTransactionsOpen(0), 0);
}

INSTANTIATE_TEST_SUITE_P(Databases, SessionTransactionTest,
                         ::testing::Values("sqlite", "postgresql", "mariadb"),
                         [](const auto& info) { return info.param; });

INSTANTIATE_TEST_SUITE_P(Servers, ServerSessionTransactionTest,
                         ::testing::Values("postgresql", "mariadb"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace connbroker::testing
