// Where the daemon listens: the default Unix socket path, the checks that
// keep its socket to the daemon's user (and a granted group), and how a TCP
// address is classified.
#ifndef CONNBROKER_SERVER_LISTEN_ADDRESS_H_
#define CONNBROKER_SERVER_LISTEN_ADDRESS_H_

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace connbroker::server {

// "unix:$XDG_RUNTIME_DIR/connbroker.sock", else
// "unix:/tmp/connbroker-<uid>/connbroker.sock". The client library computes
// the same default; the two must agree.
std::string DefaultListenAddress();

// broker.toml's [broker] socket_group, looked up.
struct SocketGroup {
  std::string name;
  gid_t gid = 0;
};

// nullopt for "" (no group); FAILED_PRECONDITION naming an unknown group.
absl::StatusOr<std::optional<SocketGroup>> ResolveSocketGroup(
    const std::string& name);

// For a "unix:PATH" address: makes PATH's directory when missing (mode 0700,
// or 0710 owned by `group`), and refuses (FAILED_PRECONDITION saying what to
// do) a directory that is a symbolic link, is owned by another user than the
// daemon's effective one, or that group or others may write -- whoever can
// write there can replace the socket with their own. With `group`, an
// existing directory must belong to it and let it search (g+x). Also refuses
// to start when another daemon answers on PATH, and removes a stale socket
// file a crashed daemon left. "unix-abstract:" is refused (such sockets have
// no permissions). Other addresses pass through. Returns the socket path
// ("" for TCP).
absl::StatusOr<std::string> PrepareListenAddress(
    const std::string& address,
    const std::optional<SocketGroup>& group = std::nullopt);

// After the server listens on `path`: gives the socket to `group`, mode 0660.
absl::Status ShareSocketWithGroup(const std::string& path,
                                  const SocketGroup& group);

// True for a TCP "host:port" address whose host is a loopback address:
// 127.0.0.0/8, ::1 (as "[::1]:port") or "localhost".
bool IsLoopbackAddress(const std::string& address);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_LISTEN_ADDRESS_H_
