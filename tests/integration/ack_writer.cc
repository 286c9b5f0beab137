// A writer process for crash_durability_test: inserts (writer, seq) rows
// through a connbroker daemon with seq = 1, 2, 3, ... and records every seq
// the daemon acknowledged in an ack log, so that the test can kill the
// daemon and check that nothing acknowledged was lost.
//
//   ack_writer TARGET NAME INSERT_SQL WRITER_ID ACK_LOG
//
// INSERT_SQL takes (writer, seq) as its two positional parameters, in the
// database's own placeholder style ("?" or "$1").
// A seq goes into the log only after its Execute returned OK, and the log
// is fsync'ed before the next INSERT is sent: the log never claims more than
// the daemon acknowledged, even if this process dies too. The first failed
// call ends the run (a later seq would leave a gap the test could not
// explain); it exits 0 when the failure is UNAVAILABLE, which is what a
// killed daemon looks like, and 1 otherwise.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "connbroker/client.h"

namespace {

// Appends `text` to `fd` and forces it to disk; false on failure.
bool AppendDurably(int fd, const std::string& text) {
  size_t written = 0;
  while (written < text.size()) {
    ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    written += static_cast<size_t>(n);
  }
  return ::fsync(fd) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(
        stderr, "usage: ack_writer TARGET NAME INSERT_SQL WRITER_ID ACK_LOG\n");
    return 2;
  }
  const std::string target = argv[1];
  const std::string name = argv[2];
  const std::string sql = argv[3];
  const int64_t writer = std::atoll(argv[4]);
  const std::string log_path = argv[5];

  const int fd =
      ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
  if (fd < 0) {
    std::fprintf(stderr, "cannot open %s: %s\n", log_path.c_str(),
                 std::strerror(errno));
    return 2;
  }
  // A short deadline: once the daemon is gone, a call must fail instead of
  // holding the test up.
  absl::StatusOr<std::unique_ptr<connbroker::Client>> client =
      connbroker::Client::Create(
          {.target = target, .default_deadline = absl::Seconds(20)});
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 2;
  }
  absl::StatusOr<connbroker::Connection> connection =
      (*client)->Connect({.name = name});
  if (!connection.ok()) {
    std::fprintf(stderr, "connect: %s\n",
                 connection.status().ToString().c_str());
    return 2;
  }
  for (int64_t seq = 1;; ++seq) {
    absl::StatusOr<connbroker::ExecuteResult> result =
        connection->Execute(sql, {writer, seq});
    if (!result.ok()) {
      std::fprintf(stderr, "writer %lld seq %lld: %s\n",
                   static_cast<long long>(writer), static_cast<long long>(seq),
                   result.status().ToString().c_str());
      return result.status().code() == absl::StatusCode::kUnavailable ? 0 : 1;
    }
    if (result->rows_affected != 1) {
      std::fprintf(stderr, "writer %lld seq %lld: %lld rows affected\n",
                   static_cast<long long>(writer), static_cast<long long>(seq),
                   static_cast<long long>(result->rows_affected));
      return 1;
    }
    if (!AppendDurably(fd, absl::StrCat(seq, "\n"))) {
      std::fprintf(stderr, "cannot write %s: %s\n", log_path.c_str(),
                   std::strerror(errno));
      return 2;
    }
  }
}
