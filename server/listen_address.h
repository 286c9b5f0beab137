// Where the daemon listens: the default Unix socket path and its safe setup.
#ifndef CONNBROKER_SERVER_LISTEN_ADDRESS_H_
#define CONNBROKER_SERVER_LISTEN_ADDRESS_H_

#include <string>

#include "absl/status/statusor.h"

namespace connbroker::server {

// "unix:$XDG_RUNTIME_DIR/connbroker.sock", else
// "unix:/tmp/connbroker-<uid>/connbroker.sock". The client library computes
// the same default; the two must agree.
std::string DefaultListenAddress();

// For a "unix:PATH" address: makes PATH's directory (mode 0700 when this
// creates it), refuses to start when another daemon answers on PATH, and
// removes a stale socket file a crashed daemon left. Other addresses pass
// through. Returns the socket path ("" for TCP).
absl::StatusOr<std::string> PrepareListenAddress(const std::string& address);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_LISTEN_ADDRESS_H_
