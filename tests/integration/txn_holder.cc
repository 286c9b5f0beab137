// A client process that opens a transaction through a connbroker Session
// stream and holds it until it is killed, for session_test: the daemon must
// roll it back when the process dies.
//
//   txn_holder TARGET NAME WRITE_SQL [ID_SQL]
//
// Begins a transaction on connection NAME, runs WRITE_SQL in it, then runs
// ID_SQL (the backend's own id: pg_backend_pid(), CONNECTION_ID()) and
// prints "ready <id>" ("ready 0" without ID_SQL). Then it waits forever with
// the transaction open. Exits 1 with a message if any step fails.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "tests/integration/session_stream.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: txn_holder TARGET NAME WRITE_SQL [ID_SQL]\n");
    return 2;
  }
  using connbroker::testing::SessionStream;
  SessionStream stream(argv[1]);
  connbroker::v1::SessionRequest begin;
  begin.mutable_begin()->mutable_target()->mutable_connect()->set_name(argv[2]);
  auto failed = [](const char* step,
                   const std::vector<connbroker::v1::SessionResponse>& got) {
    if (got.empty()) {
      std::fprintf(stderr, "%s: the stream ended\n", step);
      return true;
    }
    if (got.back().has_error()) {
      std::fprintf(stderr, "%s: %s\n", step,
                   got.back().error().message().c_str());
      return true;
    }
    return false;
  };
  if (failed("begin", stream.Call(1, begin))) return 1;
  if (failed("write", stream.Call(2, connbroker::testing::ExecuteOn(
                                         argv[2], argv[3])))) {
    return 1;
  }
  long long id = 0;
  if (argc > 4) {
    auto answer =
        stream.Call(3, connbroker::testing::QueryOn(argv[2], argv[4]));
    if (failed("id", answer)) return 1;
    for (const auto& message : answer) {
      if (message.has_batch() && message.batch().row_count() == 1) {
        const auto& column = message.batch().columns(0);
        if (column.has_int64s()) id = column.int64s().values(0);
        if (column.has_texts()) id = std::stoll(column.texts().values(0));
      }
    }
  }
  std::printf("ready %lld\n", id);
  std::fflush(stdout);
  while (true) pause();
}
