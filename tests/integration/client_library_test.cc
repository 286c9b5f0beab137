// Integration tests through the C++ client library (this process is the
// client) against a real connbrokerd: handle recovery across a daemon
// restart, session scope, typed values, deadlines and streaming. Each test
// runs twice: calls over kept Session streams, and one-shot calls.
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "connbroker/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"

namespace connbroker::testing {
namespace {

using ::testing::HasSubstr;

class ClientLibraryTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    secrets_ = data_.Write(
        "secrets.toml",
        absl::StrCat("[connections.app]\ntype = \"sql\"\nurl = \"sqlite:///",
                     data_.path(),
                     "/app.db\"\n\n"
                     "[connections.private]\ntype = \"sql\"\nurl = "
                     "\"sqlite://\"\nscope = \"session\"\n"));
    daemon_ = Daemon::Start({.secrets_files = {secrets_}});
    ASSERT_NE(daemon_, nullptr);
    client_ = NewClient("");
  }

  std::unique_ptr<Client> NewClient(const std::string& session) {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create({.target = daemon_->target(),
                        .session_id = session,
                        .use_sessions = GetParam()});
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  TempDir data_;
  std::string secrets_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<Client> client_;
};

TEST_P(ClientLibraryTest, HandleSurvivesADaemonRestart) {
  absl::StatusOr<Connection> connection = client_->Connect({.name = "app"});
  ASSERT_TRUE(connection.ok()) << connection.status();
  ASSERT_TRUE(connection->Execute("CREATE TABLE r (v INTEGER)").ok());
  ASSERT_TRUE(connection->Execute("INSERT INTO r VALUES (5)").ok());
  std::string old_handle = connection->handle();

  // A new daemon on the same socket knows nothing of the old handle.
  ASSERT_EQ(daemon_->Stop(), 0);
  std::unique_ptr<Daemon> restarted =
      Daemon::StartOn(daemon_->socket_dir(), {.secrets_files = {secrets_}});
  ASSERT_NE(restarted, nullptr);

  absl::StatusOr<Result> result = connection->Query("SELECT v FROM r");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->num_rows(), 1u);
  EXPECT_EQ(std::get<int64_t>(result->cell(0, 0)), 5);
  // The client connected again by itself: one Connect on the new daemon.
  absl::StatusOr<v1::GetStatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->connect_calls(), 1);
  EXPECT_EQ(stats->connections_live(), 1);
  EXPECT_FALSE(connection->handle().empty());
  (void)old_handle;
}

TEST_P(ClientLibraryTest, AChangedSectionSendsItsClientsToTheNewDatabase) {
  absl::StatusOr<Connection> app = client_->Connect({.name = "app"});
  absl::StatusOr<Connection> other = client_->Connect({.name = "private"});
  ASSERT_TRUE(app.ok() && other.ok());
  ASSERT_TRUE(app->Execute("CREATE TABLE t (v INTEGER)").ok());
  ASSERT_TRUE(other->Execute("CREATE TABLE mine (v INTEGER)").ok());
  const std::string app_handle = app->handle();
  const std::string other_handle = other->handle();

  // Point [connections.app] at another file; [connections.private] stays.
  data_.Write("secrets.toml",
              absl::StrCat("[connections.app]\ntype = \"sql\"\nurl = "
                           "\"sqlite:///",
                           data_.path(),
                           "/moved.db\"\n\n"
                           "[connections.private]\ntype = \"sql\"\nurl = "
                           "\"sqlite://\"\nscope = \"session\"\n"));
  // The daemon notices the edit and forgets app's connection (bounded wait
  // on what it reports, not a sleep).
  int64_t live = 2;
  absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (live != 1 && absl::Now() < give_up) {
    absl::StatusOr<v1::GetStatsResponse> stats = client_->Stats();
    ASSERT_TRUE(stats.ok()) << stats.status();
    live = stats->connections_live();
  }
  ASSERT_EQ(live, 1);

  // The old Connection object re-connects by itself and lands on the new
  // file, where table t does not exist.
  absl::StatusOr<Result> moved = app->Query("SELECT count(*) FROM t");
  EXPECT_EQ(moved.status().code(), absl::StatusCode::kInvalidArgument)
      << moved.status();
  EXPECT_THAT(std::string(moved.status().message()),
              HasSubstr("no such table: t"));
  EXPECT_NE(app->handle(), app_handle);
  EXPECT_THAT(app->description(), HasSubstr("moved.db"));

  // The unchanged section's connection kept running, data and handle.
  absl::StatusOr<Result> kept = other->Query("SELECT count(*) FROM mine");
  EXPECT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(other->handle(), other_handle);
}

TEST_P(ClientLibraryTest, SessionScopedConnectionsArePrivate) {
  std::unique_ptr<Client> alice = NewClient("alice");
  std::unique_ptr<Client> bob = NewClient("bob");
  absl::StatusOr<Connection> a1 = alice->Connect({.name = "private"});
  absl::StatusOr<Connection> a2 = alice->Connect({.name = "private"});
  absl::StatusOr<Connection> b1 = bob->Connect({.name = "private"});
  ASSERT_TRUE(a1.ok() && a2.ok() && b1.ok());
  EXPECT_EQ(a1->handle(), a2->handle());
  EXPECT_NE(a1->handle(), b1->handle());
  EXPECT_EQ(a1->scope(), "session");
  // In-memory databases: what alice writes, bob does not see.
  ASSERT_TRUE(a1->Execute("CREATE TABLE mine (x INTEGER)").ok());
  absl::StatusOr<Result> theirs = b1->Query("SELECT * FROM mine");
  EXPECT_EQ(theirs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(theirs.status().message()),
              HasSubstr("no such table: mine"));

  // Global connections are shared whatever the session.
  absl::StatusOr<Connection> ga = alice->Connect({.name = "app"});
  absl::StatusOr<Connection> gb = bob->Connect({.name = "app"});
  ASSERT_TRUE(ga.ok() && gb.ok());
  EXPECT_EQ(ga->handle(), gb->handle());
}

TEST_P(ClientLibraryTest, TypedValuesRoundTrip) {
  absl::StatusOr<Connection> db = client_->Connect({.name = "app"});
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db->Execute("CREATE TABLE v (i INTEGER, d REAL, t TEXT, "
                          "b BLOB, n INTEGER, mixed)")
                  .ok());
  absl::StatusOr<ExecuteResult> inserted =
      db->Execute("INSERT INTO v VALUES (?, ?, ?, ?, ?, ?)",
                  {int64_t{-7}, 2.25, std::string("héllo"),
                   Blob{std::string("\0\1", 2)}, std::monostate{}, int64_t{1}});
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->rows_affected, 1);
  EXPECT_EQ(inserted->last_insert_id, 1);
  ASSERT_TRUE(db->Execute("INSERT INTO v (i, mixed) VALUES (:i, :m)", {},
                          {{"i", int64_t{8}}, {"m", std::string("text")}})
                  .ok());

  absl::StatusOr<Result> result =
      db->Query("SELECT i, d, t, b, n, mixed FROM v ORDER BY rowid");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->num_rows(), 2u);
  EXPECT_EQ(std::get<int64_t>(result->cell(0, 0)), -7);
  EXPECT_EQ(std::get<double>(result->cell(0, 1)), 2.25);
  EXPECT_EQ(std::get<std::string>(result->cell(0, 2)), "héllo");
  EXPECT_EQ(std::get<Blob>(result->cell(0, 3)).bytes, std::string("\0\1", 2));
  EXPECT_TRUE(result->is_null(0, 4));
  EXPECT_EQ(std::get<int64_t>(result->cell(0, 5)), 1);
  EXPECT_EQ(std::get<std::string>(result->cell(1, 5)), "text");
  EXPECT_TRUE(result->is_null(1, 1));
  EXPECT_EQ(result->column(0).database_type, "INTEGER");
  EXPECT_EQ(result->column(5).kind, ValueKind::kMixed);
}

TEST_P(ClientLibraryTest, LargeResultsStreamInBatches) {
  absl::StatusOr<Connection> db = client_->Connect({.name = "app"});
  ASSERT_TRUE(db.ok()) << db.status();
  int batches = 0;
  int64_t rows = 0;
  int64_t last = 0;
  absl::StatusOr<QuerySummary> summary = db->QueryBatches(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
      "WHERE i < 100000) SELECT i, 'row ' || i AS label FROM n",
      {.chunk_rows = 4096}, [&](const Result& batch) -> absl::Status {
        if (batch.num_rows() == 0) return absl::OkStatus();  // the schema
        ++batches;
        EXPECT_LE(batch.num_rows(), 4096u);
        for (size_t r = 0; r < batch.num_rows(); ++r) {
          int64_t i = std::get<int64_t>(batch.cell(r, 0));
          EXPECT_EQ(i, last + 1);
          last = i;
        }
        rows += batch.num_rows();
        return absl::OkStatus();
      });
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(rows, 100000);
  EXPECT_EQ(summary->row_count, 100000);
  EXPECT_EQ(batches, (100000 + 4095) / 4096);
}

TEST_P(ClientLibraryTest, DeadlineInterruptsTheDatabaseAndFreesTheBackend) {
  absl::StatusOr<Connection> db = client_->Connect({.name = "app"});
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<Result> endless = db->Query(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
      "SELECT count(*) FROM n",
      {.deadline = absl::Milliseconds(300)});
  EXPECT_EQ(endless.status().code(), absl::StatusCode::kDeadlineExceeded)
      << endless.status();
  // The daemon interrupted SQLite and gave the backend back: a query on the
  // same connection still runs, and no backend stays in use. The daemon
  // learns of the deadline a moment after the client does, so wait (bounded)
  // for the pool to show it rather than assume the order.
  absl::StatusOr<Result> after = db->Query("SELECT 1");
  ASSERT_TRUE(after.ok()) << after.status();
  int in_use = -1;
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (in_use != 0 && absl::Now() < give_up) {
    absl::StatusOr<v1::ListConnectionsResponse> listing =
        client_->ListConnections();
    ASSERT_TRUE(listing.ok()) << listing.status();
    ASSERT_EQ(listing->connections_size(), 1);
    in_use = listing->connections(0).pool().in_use();
  }
  EXPECT_EQ(in_use, 0) << "the interrupted query kept its backend";
}

INSTANTIATE_TEST_SUITE_P(Paths, ClientLibraryTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Sessions" : "OneShot";
                         });

}  // namespace
}  // namespace connbroker::testing
