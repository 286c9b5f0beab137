// NetworkDatabaseTest: a real connbrokerd in front of the real PostgreSQL
// and MariaDB servers that tests/run.sh starts (tests/servers/db-servers.sh),
// with the sections every network-database integration test uses, and ways
// to see what the server itself sees.
//
// What the server sees is read through the daemon too, on a section of its
// own ("observer"): pg_stat_activity and MariaDB's processlist. Waits for
// the server to reach a state poll it with a bound; no test sleeps to make a
// race pass.
#ifndef CONNBROKER_TESTS_INTEGRATION_NETWORK_DATABASE_FIXTURE_H_
#define CONNBROKER_TESTS_INTEGRATION_NETWORK_DATABASE_FIXTURE_H_

#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"
#include "tests/testing/db_servers.h"

namespace connbroker::testing {

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

inline std::optional<Backend> PostgresBackend() {
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

inline std::optional<Backend> MariadbBackend() {
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

  // Polls until no backend of `name` is in use (the daemon settles a
  // cancelled backend after the server already dropped the statement), or
  // `bound` passes; returns how many are in use then.
  int InUseAfterSettling(const std::string& name,
                         absl::Duration bound = absl::Seconds(5)) {
    const absl::Time give_up = absl::Now() + bound;
    int in_use = PoolOf(name).in_use();
    while (in_use != 0 && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(20));
      in_use = PoolOf(name).in_use();
    }
    return in_use;
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

inline std::string ServerName(
    const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}

}  // namespace connbroker::testing

#endif  // CONNBROKER_TESTS_INTEGRATION_NETWORK_DATABASE_FIXTURE_H_
