// A well-behaved client process for abuse_test: runs `SELECT 1` on one
// connection in a loop until a stop file appears, and reports how it went.
//
//   select_loop TARGET NAME READY_FILE STOP_FILE
//
// It creates READY_FILE after its first successful call, so the test starts
// the abuse only once this client is in place. Every failure is printed to
// stderr (the loop goes on: the test wants them all). At the end it prints
// one line to stdout:
//   calls=N failures=F p50_us=X p99_us=Y max_us=Z
// and exits 0 when every call succeeded, 1 otherwise.
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/client.h"

namespace {

bool Exists(const std::string& path) {
  struct stat info;
  return ::stat(path.c_str(), &info) == 0;
}

int64_t Percentile(const std::vector<int64_t>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  size_t index = static_cast<size_t>(fraction * (sorted.size() - 1) + 0.5);
  return sorted[std::min(index, sorted.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr,
                 "usage: select_loop TARGET NAME READY_FILE STOP_FILE\n");
    return 2;
  }
  const std::string ready_file = argv[3];
  const std::string stop_file = argv[4];
  absl::StatusOr<std::unique_ptr<connbroker::Client>> client =
      connbroker::Client::Create({.target = argv[1]});
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 2;
  }
  absl::StatusOr<connbroker::Connection> connection =
      (*client)->Connect({.name = argv[2]});
  if (!connection.ok()) {
    std::fprintf(stderr, "connect: %s\n",
                 connection.status().ToString().c_str());
    return 2;
  }
  std::vector<int64_t> micros;
  int64_t failures = 0;
  bool ready = false;
  while (!Exists(stop_file)) {
    const absl::Time start = absl::Now();
    absl::StatusOr<connbroker::Result> result = connection->Query("SELECT 1");
    micros.push_back(absl::ToInt64Microseconds(absl::Now() - start));
    if (!result.ok()) {
      ++failures;
      std::fprintf(stderr, "call %zu: %s\n", micros.size(),
                   result.status().ToString().c_str());
      continue;
    }
    if (result->num_rows() != 1) {
      ++failures;
      std::fprintf(stderr, "call %zu: %zu rows\n", micros.size(),
                   result->num_rows());
      continue;
    }
    if (!ready) {
      std::ofstream(ready_file) << "ready\n";
      ready = true;
    }
  }
  std::vector<int64_t> sorted = micros;
  std::sort(sorted.begin(), sorted.end());
  std::printf("calls=%zu failures=%lld p50_us=%lld p99_us=%lld max_us=%lld\n",
              micros.size(), static_cast<long long>(failures),
              static_cast<long long>(Percentile(sorted, 0.5)),
              static_cast<long long>(Percentile(sorted, 0.99)),
              static_cast<long long>(sorted.empty() ? 0 : sorted.back()));
  return failures == 0 ? 0 : 1;
}
