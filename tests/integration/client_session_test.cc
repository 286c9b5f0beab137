// Integration tests of the C++ client's Session streams against a real
// connbrokerd on SQLite: pooled calls against one-shot calls, transactions
// seen from a second client and a second process, a pipelined Session, and
// `connbroker shell` driven through a pipe.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"

namespace connbroker::testing {
namespace {

using ::testing::HasSubstr;

class ClientSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    secrets_ = data_.Write(
        "secrets.toml",
        absl::StrCat("[connections.app]\ntype = \"sql\"\nurl = \"sqlite:///",
                     data_.path(), "/app.db\"\n"));
    daemon_ = Daemon::Start({.secrets_files = {secrets_}});
    ASSERT_NE(daemon_, nullptr);
    client_ = NewClient(true);
    ASSERT_NE(client_, nullptr);
    absl::StatusOr<Connection> app = client_->Connect({.name = "app"});
    ASSERT_TRUE(app.ok()) << app.status();
    app_ = std::make_unique<Connection>(*app);
    ASSERT_TRUE(app_->Execute("CREATE TABLE t (v INTEGER)").ok());
  }

  std::unique_ptr<Client> NewClient(bool use_sessions) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(
        {.target = daemon_->target(), .use_sessions = use_sessions});
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // SELECT count(*) FROM t through a client of its own.
  int64_t CountFromAnotherClient() {
    std::unique_ptr<Client> other = NewClient(true);
    absl::StatusOr<Connection> app = other->Connect({.name = "app"});
    EXPECT_TRUE(app.ok()) << app.status();
    if (!app.ok()) return -1;
    absl::StatusOr<Result> count = app->Query("SELECT count(*) FROM t");
    EXPECT_TRUE(count.ok()) << count.status();
    return count.ok() ? std::get<int64_t>(count->cell(0, 0)) : -1;
  }

  // The same, from another process: the connbroker command.
  int64_t CountFromAnotherProcess() {
    ProcessResult count = daemon_->Cli(
        {"query", "app", "SELECT count(*) AS n FROM t", "--format", "json"});
    EXPECT_EQ(count.exit_code, 0) << count.err;
    if (count.exit_code != 0) return -1;
    return static_cast<int64_t>(
        Cell(ParseJson(count.out), 0, 0).number_value());
  }

  // Runs `connbroker shell app` with `input` on its standard input (a file:
  // not a terminal, so no prompt).
  ProcessResult Shell(const std::string& input,
                      const std::vector<std::string>& flags = {}) {
    static int inputs = 0;
    const std::string path =
        data_.Write(absl::StrCat("shell", ++inputs, ".sql"), input);
    std::vector<std::string> argv = {"/bin/sh",
                                     "-c",
                                     "exec \"$@\" < \"$SHELL_INPUT\"",
                                     "sh",
                                     CONNBROKER_CLI_PATH,
                                     "shell",
                                     "app"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    ChildProcess child(
        argv, {{"CONNBROKER_TARGET", daemon_->target()}, {"SHELL_INPUT", path}},
        daemon_->dir().path(), "");
    return child.WaitAtMost(60000);
  }

  TempDir data_;
  std::string secrets_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<Connection> app_;
};

TEST_F(ClientSessionTest, SessionsAndOneShotCallsGiveTheSameResults) {
  std::unique_ptr<Client> one_shot = NewClient(false);
  absl::StatusOr<Connection> plain = one_shot->Connect({.name = "app"});
  ASSERT_TRUE(plain.ok()) << plain.status();

  absl::StatusOr<ExecuteResult> by_session =
      app_->Execute("INSERT INTO t VALUES (?), (?)", {int64_t{1}, int64_t{2}});
  absl::StatusOr<ExecuteResult> by_call =
      plain->Execute("INSERT INTO t VALUES (?)", {int64_t{3}});
  ASSERT_TRUE(by_session.ok()) << by_session.status();
  ASSERT_TRUE(by_call.ok()) << by_call.status();
  EXPECT_EQ(by_session->rows_affected, 2);
  EXPECT_EQ(by_call->rows_affected, 1);
  EXPECT_EQ(by_session->handle, by_call->handle);

  const std::string sql =
      "SELECT v, v * 1.5 AS d, 'n' || v AS s, NULL AS z FROM t ORDER BY v";
  absl::StatusOr<Result> a = app_->Query(sql);
  absl::StatusOr<Result> b = plain->Query(sql);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->num_rows(), 3u);
  ASSERT_EQ(b->num_rows(), 3u);
  ASSERT_EQ(a->num_columns(), b->num_columns());
  for (size_t r = 0; r < 3; ++r) {
    for (size_t c = 0; c < a->num_columns(); ++c) {
      EXPECT_EQ(a->cell(r, c), b->cell(r, c)) << r << "," << c;
    }
  }
  EXPECT_EQ(a->column(1).name, "d");
  EXPECT_EQ(a->summary().row_count, b->summary().row_count);

  // Errors carry the same code, message and detail either way.
  absl::StatusOr<Result> bad_a = app_->Query("SELEC 1");
  absl::StatusOr<Result> bad_b = plain->Query("SELEC 1");
  EXPECT_EQ(bad_a.status().code(), bad_b.status().code());
  EXPECT_EQ(bad_a.status().message(), bad_b.status().message());
  std::optional<v1::ErrorDetail> detail_a = ErrorDetailOf(bad_a.status());
  std::optional<v1::ErrorDetail> detail_b = ErrorDetailOf(bad_b.status());
  ASSERT_TRUE(detail_a.has_value());
  ASSERT_TRUE(detail_b.has_value());
  EXPECT_EQ(detail_a->SerializeAsString(), detail_b->SerializeAsString());

  // Batches stream the same way.
  int64_t rows = 0;
  absl::StatusOr<QuerySummary> summary = app_->QueryBatches(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
      "WHERE i < 20000) SELECT i FROM n",
      {.chunk_rows = 1000}, [&](const Result& batch) {
        rows += static_cast<int64_t>(batch.num_rows());
        return absl::OkStatus();
      });
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(rows, 20000);
  EXPECT_EQ(summary->row_count, 20000);

  // A callback that stops the query leaves the pooled stream usable.
  absl::StatusOr<QuerySummary> stopped = app_->QueryBatches(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
      "WHERE i < 200000) SELECT i FROM n",
      {.chunk_rows = 100}, [&](const Result& batch) -> absl::Status {
        if (batch.num_rows() > 0) return absl::CancelledError("enough");
        return absl::OkStatus();
      });
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
  absl::StatusOr<Result> after = app_->Query("SELECT count(*) FROM t");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(std::get<int64_t>(after->cell(0, 0)), 3);

  ResetResult reset;
  EXPECT_TRUE(app_->Reset(&reset).ok());
  EXPECT_EQ(reset.handle, app_->handle());
}

TEST_F(ClientSessionTest, CommitIsVisibleToOtherClientsAndProcesses) {
  absl::StatusOr<Transaction> txn = app_->Begin();
  ASSERT_TRUE(txn.ok()) << txn.status();
  EXPECT_TRUE(txn->active());
  EXPECT_EQ(txn->handle(), app_->handle());
  ASSERT_TRUE(txn->Execute("INSERT INTO t VALUES (1)").ok());
  absl::StatusOr<ExecuteResult> two =
      txn->Execute("INSERT INTO t VALUES (?)", {int64_t{2}});
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->rows_affected, 1);

  // Read-your-own-writes inside; nothing outside yet.
  absl::StatusOr<Result> inside = txn->Query("SELECT count(*) FROM t");
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ(std::get<int64_t>(inside->cell(0, 0)), 2);
  EXPECT_EQ(CountFromAnotherClient(), 0);

  ASSERT_TRUE(txn->Commit().ok());
  EXPECT_FALSE(txn->active());
  EXPECT_EQ(CountFromAnotherClient(), 2);
  EXPECT_EQ(CountFromAnotherProcess(), 2);

  // Ended: every call is refused.
  EXPECT_EQ(txn->Query("SELECT 1").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(txn->Execute("INSERT INTO t VALUES (3)").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(txn->Commit().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(txn->Rollback().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CountFromAnotherClient(), 2);
}

TEST_F(ClientSessionTest, RollbackAndDestructionLeaveNoTrace) {
  {
    absl::StatusOr<Transaction> txn =
        app_->Begin({.deadline = absl::Seconds(10)});
    ASSERT_TRUE(txn.ok()) << txn.status();
    ASSERT_TRUE(txn->Execute("INSERT INTO t VALUES (1)").ok());
    ASSERT_TRUE(txn->Rollback().ok());
    EXPECT_EQ(txn->Query("SELECT 1").status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(CountFromAnotherClient(), 0);
  {
    absl::StatusOr<Transaction> txn = app_->Begin();
    ASSERT_TRUE(txn.ok()) << txn.status();
    ASSERT_TRUE(txn->Execute("INSERT INTO t VALUES (2)").ok());
    // Moved, then dropped without Commit: rolled back once, by the owner.
    Transaction moved = *std::move(txn);
    EXPECT_EQ(txn->Query("SELECT 1").status().code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(moved.active());
  }
  EXPECT_EQ(CountFromAnotherClient(), 0);
  EXPECT_EQ(CountFromAnotherProcess(), 0);
  // The connection's backend is free again: a write outside goes through.
  ASSERT_TRUE(app_->Execute("INSERT INTO t VALUES (3)").ok());
  EXPECT_EQ(CountFromAnotherProcess(), 1);
}

TEST_F(ClientSessionTest, ASqlCommitInsideATransactionEndsIt) {
  absl::StatusOr<Transaction> txn = app_->Begin();
  ASSERT_TRUE(txn.ok()) << txn.status();
  ASSERT_TRUE(txn->Execute("INSERT INTO t VALUES (1)").ok());
  ASSERT_TRUE(txn->Execute("COMMIT").ok());
  EXPECT_FALSE(txn->active());
  EXPECT_EQ(txn->Execute("INSERT INTO t VALUES (2)").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CountFromAnotherClient(), 1);
}

TEST_F(ClientSessionTest, ABareBeginOnAConnectionIsRefusedAndRolledBack) {
  absl::StatusOr<ExecuteResult> open =
      app_->Execute("BEGIN; INSERT INTO t VALUES (1)");
  EXPECT_EQ(open.status().code(), absl::StatusCode::kFailedPrecondition)
      << open.status();
  EXPECT_THAT(std::string(open.status().message()), HasSubstr("transaction"));
  EXPECT_EQ(CountFromAnotherClient(), 0);
  ASSERT_TRUE(app_->Execute("INSERT INTO t VALUES (2)").ok());
  EXPECT_EQ(CountFromAnotherClient(), 1);
}

TEST_F(ClientSessionTest, ManyThreadsShareOneClientThroughThePool) {
  constexpr int kThreads = 8;
  constexpr int kCalls = 150;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < kCalls; ++j) {
        const int64_t want = int64_t{i} * 1000 + j;
        absl::StatusOr<Result> r = app_->Query("SELECT ?1", {.params = {want}});
        if (!r.ok() || r->num_rows() != 1 ||
            std::get<int64_t>(r->cell(0, 0)) != want) {
          failures.fetch_add(1);
        }
        if (j % 50 == 0 && !app_->Execute("INSERT INTO t VALUES (1)").ok()) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(CountFromAnotherClient(), kThreads * 3);
}

TEST_F(ClientSessionTest, APipelinedSessionAnswersInOrder) {
  Session session = client_->OpenSession();
  constexpr int kRequests = 50;
  std::vector<uint64_t> ids;
  for (int i = 0; i < kRequests; ++i) {
    v1::SessionRequest request;
    v1::QueryRequest* query = request.mutable_query();
    query->mutable_target()->set_handle(app_->handle());
    query->set_sql("SELECT ?1 AS i");
    query->mutable_params()->add_positional()->set_int64_value(i);
    absl::StatusOr<uint64_t> id = session.Send(std::move(request));
    ASSERT_TRUE(id.ok()) << id.status();
    ids.push_back(*id);
  }
  // The blocking forms wait for the pipeline to drain.
  EXPECT_EQ(session.Query(*app_, "SELECT 1").status().code(),
            absl::StatusCode::kFailedPrecondition);

  for (int i = 0; i < kRequests; ++i) {
    Result result;
    for (;;) {
      absl::StatusOr<v1::SessionResponse> response = session.Receive();
      ASSERT_TRUE(response.ok()) << response.status();
      ASSERT_EQ(response->id(), ids[i]);
      ASSERT_FALSE(response->has_error()) << response->error().message();
      if (response->has_schema()) result.SetSchema(response->schema());
      if (response->has_batch()) {
        ASSERT_TRUE(result.AppendBatch(response->batch()).ok());
      }
      if (response->has_summary()) break;
    }
    ASSERT_EQ(result.num_rows(), 1u);
    EXPECT_EQ(std::get<int64_t>(result.cell(0, 0)), i);
  }
  // Drained: the blocking forms work again, on the same stream.
  absl::StatusOr<Result> after = session.Query(*app_, "SELECT 7");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(std::get<int64_t>(after->cell(0, 0)), 7);
}

TEST_F(ClientSessionTest, ASessionRunsSqlTransactions) {
  Session session = client_->OpenSession();
  ASSERT_TRUE(session.Execute(*app_, "BEGIN").ok());
  EXPECT_TRUE(session.transaction_open());
  ASSERT_TRUE(session.Execute(*app_, "INSERT INTO t VALUES (1)").ok());
  absl::StatusOr<Result> inside =
      session.Query(*app_, "SELECT count(*) FROM t");
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ(std::get<int64_t>(inside->cell(0, 0)), 1);
  EXPECT_EQ(CountFromAnotherClient(), 0);
  ASSERT_TRUE(session.Execute(*app_, "COMMIT").ok());
  EXPECT_FALSE(session.transaction_open());
  EXPECT_EQ(CountFromAnotherClient(), 1);
}

TEST_F(ClientSessionTest, ShellCommitsWhatItWasPiped) {
  ProcessResult shell = Shell(
      "BEGIN;\n"
      "INSERT INTO t\n  VALUES (1);  -- a comment; with a semicolon\n"
      "INSERT INTO t VALUES (length('a;b'));\n"
      "SELECT count(*) AS n FROM t;\n"
      "COMMIT;\n");
  ASSERT_EQ(shell.exit_code, 0) << shell.err;
  EXPECT_THAT(shell.out, HasSubstr("OK, 1 row affected"));
  EXPECT_EQ(shell.out.find("app>"), std::string::npos) << "no prompt on a pipe";
  EXPECT_EQ(CountFromAnotherClient(), 2);
  absl::StatusOr<Result> three = app_->Query("SELECT v FROM t WHERE v = 3");
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(three->num_rows(), 1u) << "the quoted ';' split the statement";

  ProcessResult json =
      Shell("SELECT count(*) AS n FROM t;", {"--format", "json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(Cell(ParseJson(json.out), 0, 0).number_value(), 2);
}

TEST_F(ClientSessionTest, ShellRollbackAndEndOfInputLeaveNothing) {
  ProcessResult rolled = Shell(
      "BEGIN;\nINSERT INTO t VALUES (1);\nROLLBACK;\n"
      "INSERT INTO t VALUES (2) RETURNING v;\n");
  ASSERT_EQ(rolled.exit_code, 0) << rolled.err;
  EXPECT_EQ(CountFromAnotherClient(), 1);
  // A transaction still open at the end of input is rolled back.
  ProcessResult open = Shell("BEGIN;\nINSERT INTO t VALUES (3);\n\\q\n");
  ASSERT_EQ(open.exit_code, 0) << open.err;
  EXPECT_EQ(CountFromAnotherClient(), 1);
  EXPECT_EQ(CountFromAnotherProcess(), 1);
}

TEST_F(ClientSessionTest, AFailingStatementInAPipeFailsTheShellButNotTheRest) {
  ProcessResult shell = Shell(
      "INSERT INTO t VALUES (1);\n"
      "INSERT INTO missing VALUES (1);\n"
      "SELEC oops;\n"
      "INSERT INTO t VALUES (2);\n");
  EXPECT_EQ(shell.exit_code, 1);
  EXPECT_THAT(shell.err, HasSubstr("no such table: missing"));
  EXPECT_EQ(CountFromAnotherClient(), 2);
}

}  // namespace
}  // namespace connbroker::testing
