// Acknowledged writes survive kill -9 of the daemon. Writer processes insert
// rows through a real connbrokerd and log every row the daemon acknowledged
// (fsync'ed); the daemon is killed with SIGKILL mid-stream, a new one starts
// on the same secrets and socket, and every logged row must be in the table.
// Its own binary, which ctest runs alone (RUN_SERIAL): it kills a daemon and
// loads the shared test database servers.
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "SQLiteCpp/SQLiteCpp.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"
#include "tests/testing/db_servers.h"

namespace connbroker::testing {
namespace {

constexpr int kWriters = 4;
// Rows each writer must have acknowledged before the kill: enough that the
// kill lands in the middle of a steady stream of commits.
constexpr int kAckedBeforeKill = 200;

// The seqs in an ack log, one per line, in order.
std::vector<int64_t> ReadAckLog(const std::string& path) {
  std::vector<int64_t> seqs;
  std::istringstream lines(ReadFile(path));
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty()) seqs.push_back(std::stoll(line));
  }
  return seqs;
}

// True once `pid` has exited (a zombie not yet reaped counts): lets the
// test fail at once when a writer gives up early, instead of at a deadline.
bool Exited(pid_t pid) {
  std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ||
         stat[paren + 2] == 'Z' || stat[paren + 2] == 'X';
}

int64_t AsInt(const Value& value) {
  if (const int64_t* i = std::get_if<int64_t>(&value)) return *i;
  ADD_FAILURE() << "not an integer cell";
  return -1;
}

class CrashDurabilityTest : public ::testing::TestWithParam<std::string> {
 protected:
  // The section's url for the backend under test, or nullopt when its test
  // server is not in the environment.
  std::optional<std::string> Url() {
    if (GetParam() == "sqlite") {
      return absl::StrCat("sqlite:///", data_.Path("app.db"));
    }
    if (GetParam() == "postgresql") {
      std::optional<PgServer> server = PgServerFromEnv();
      if (server) return server->Url();
      return std::nullopt;
    }
    std::optional<MysqlServer> server = MysqlServerFromEnv();
    if (server) return server->Url();
    return std::nullopt;
  }

  std::unique_ptr<Client> NewClient(const Daemon& daemon) {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create({.target = daemon.target()});
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // Every (writer, seq) in the table, through `daemon`.
  std::map<int64_t, std::set<int64_t>> RowsThroughDaemon(
      const Daemon& daemon, const std::string& table) {
    std::map<int64_t, std::set<int64_t>> rows;
    std::unique_ptr<Client> client = NewClient(daemon);
    if (client == nullptr) return rows;
    absl::StatusOr<Connection> db = client->Connect({.name = "db"});
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return rows;
    absl::StatusOr<Result> result =
        db->Query(absl::StrCat("SELECT writer, seq FROM ", table));
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return rows;
    for (size_t row = 0; row < result->num_rows(); ++row) {
      rows[AsInt(result->cell(row, 0))].insert(AsInt(result->cell(row, 1)));
    }
    return rows;
  }

  TempDir data_;
};

TEST_P(CrashDurabilityTest, AcknowledgedWritesSurviveKillNine) {
  std::optional<std::string> url = Url();
  if (!url) GTEST_SKIP() << kNoServersMessage;
  // A table of this run's own on the shared servers, so a leftover of an
  // earlier (killed) run or a concurrent one never mixes in.
  const std::string table =
      GetParam() == "sqlite"
          ? "acked"
          : absl::StrCat("acked_", ::getpid(), "_",
                         absl::ToUnixMicros(absl::Now()) % 1000000000);
  const std::string secrets = data_.Write(
      "secrets.toml",
      absl::StrCat("[connections.db]\ntype = \"sql\"\nurl = \"", *url, "\"\n"));
  std::unique_ptr<Daemon> daemon = Daemon::Start({.secrets_files = {secrets}});
  ASSERT_NE(daemon, nullptr);
  ProcessResult created = daemon->Cli(
      {"execute", "db",
       absl::StrCat("CREATE TABLE ", table,
                    " (writer INTEGER, seq INTEGER, PRIMARY KEY (writer, "
                    "seq))")});
  ASSERT_EQ(created.exit_code, 0) << created.err;

  // PostgreSQL numbers its placeholders; SQLite and MariaDB take "?".
  const std::string insert = absl::StrCat(
      "INSERT INTO ", table,
      GetParam() == "postgresql" ? " VALUES ($1, $2)" : " VALUES (?, ?)");
  std::vector<std::unique_ptr<ChildProcess>> writers;
  std::vector<std::string> logs;
  for (int w = 0; w < kWriters; ++w) {
    logs.push_back(data_.Path(absl::StrCat("acks-", w)));
    writers.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{ACK_WRITER_PATH, daemon->target(), "db",
                                 insert, absl::StrCat(w), logs.back()},
        std::map<std::string, std::string>{}, data_.path(), ""));
  }

  // Wait (with a deadline, never a fixed sleep) until every writer has had
  // kAckedBeforeKill rows acknowledged; they keep writing meanwhile.
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  bool all_acked = false;
  while (!all_acked && absl::Now() < give_up) {
    all_acked = true;
    for (int w = 0; w < kWriters; ++w) {
      if (ReadAckLog(logs[w]).size() < kAckedBeforeKill) all_acked = false;
      ASSERT_FALSE(Exited(writers[w]->pid()))
          << "writer " << w
          << " stopped before the kill: " << writers[w]->StderrSoFar()
          << "\ndaemon log:\n"
          << daemon->Log();
    }
    if (!all_acked) absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(all_acked) << "writers did not reach " << kAckedBeforeKill
                         << " acknowledged rows in 60 s";

  daemon->Signal(SIGKILL);
  // Each writer's next call fails once the daemon is gone, and it exits.
  for (int w = 0; w < kWriters; ++w) {
    ProcessResult result = writers[w]->WaitAtMost(30000);
    EXPECT_EQ(result.exit_code, 0)
        << "writer " << w << " did not stop on UNAVAILABLE: " << result.err;
  }
  const std::string socket_dir = daemon->socket_dir();
  // The killed daemon's stale socket stays; the new one must take it over.
  std::unique_ptr<Daemon> restarted =
      Daemon::StartOn(socket_dir, {.secrets_files = {secrets}});
  ASSERT_NE(restarted, nullptr);

  std::map<int64_t, std::set<int64_t>> rows =
      RowsThroughDaemon(*restarted, table);
  if (GetParam() == "sqlite") {
    // And the file itself, read without the daemon: the same rows.
    SQLite::Database file(data_.Path("app.db"), SQLite::OPEN_READONLY);
    std::map<int64_t, std::set<int64_t>> on_disk;
    SQLite::Statement select(file, "SELECT writer, seq FROM acked");
    while (select.executeStep()) {
      on_disk[select.getColumn(0).getInt64()].insert(
          select.getColumn(1).getInt64());
    }
    EXPECT_EQ(on_disk, rows);
  }

  int64_t checked = 0;
  int64_t in_flight = 0;
  for (int w = 0; w < kWriters; ++w) {
    const std::vector<int64_t> acked = ReadAckLog(logs[w]);
    ASSERT_GE(acked.size(), kAckedBeforeKill);
    const std::set<int64_t>& stored = rows[w];
    int64_t missing = 0;
    for (int64_t seq : acked) {
      if (stored.count(seq) == 0) {
        ++missing;
        ADD_FAILURE() << "writer " << w << ": acknowledged seq " << seq
                      << " is not in the table after the kill";
        if (missing >= 10) break;  // the count below tells the rest
      }
    }
    EXPECT_EQ(missing, 0) << "writer " << w;
    checked += static_cast<int64_t>(acked.size());
    // The reverse: a writer sends one INSERT at a time and logs it once
    // acknowledged, so the table holds its logged seqs 1..n and at most the
    // one that was in flight at the kill, n + 1.
    const int64_t last = static_cast<int64_t>(acked.size());
    EXPECT_EQ(acked.back(), last) << "writer " << w << "'s log has gaps";
    EXPECT_LE(stored.size(), acked.size() + 1) << "writer " << w;
    if (!stored.empty()) {
      EXPECT_LE(*stored.rbegin(), last + 1) << "writer " << w;
      if (*stored.rbegin() == last + 1) ++in_flight;
    }
  }
  rows.erase(rows.lower_bound(0), rows.lower_bound(kWriters));
  EXPECT_TRUE(rows.empty()) << "rows of writers that never ran";

  std::cout << "[ durability ] " << GetParam() << ": " << checked
            << " acknowledged rows checked, all present; " << in_flight
            << " of " << kWriters << " writers' in-flight row committed as well"
            << std::endl;
  RecordProperty("acked_rows_checked", static_cast<int>(checked));

  if (GetParam() != "sqlite") {
    ProcessResult dropped =
        restarted->Cli({"execute", "db", absl::StrCat("DROP TABLE ", table)});
    EXPECT_EQ(dropped.exit_code, 0) << dropped.err;
  }
  EXPECT_EQ(restarted->Stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, CrashDurabilityTest,
                         ::testing::Values("sqlite", "postgresql", "mariadb"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace connbroker::testing
