// A database server restarted under load, behind a real connbrokerd. Its own
// binary, which ctest runs alone (RUN_SERIAL): while the server is down,
// every other test using it would fail.
#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
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

using ::testing::HasSubstr;
using ::testing::Not;

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
  EXPECT_EQ(InUseAfterSettling("load"), 0);
  const int64_t sessions = Observe(backend_.count_load_sessions_sql);
  EXPECT_LE(sessions, 4);
  v1::PoolStats pool = PoolOf("load");
  EXPECT_EQ(pool.open(), sessions);
  EXPECT_GE(pool.opened_total(), 2);
}

INSTANTIATE_TEST_SUITE_P(Servers, NetworkDatabaseTest,
                         ::testing::Values("postgresql", "mariadb"),
                         ServerName);

}  // namespace
}  // namespace connbroker::testing
