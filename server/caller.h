// Caller: who is making a call, and what they may do.
//
// Built once per call by the service from the transport (AccessPolicy: the
// Unix socket's directory permissions, or a bearer token over TLS) and the
// call's metadata (the session id), then checked by the Broker: connection
// names against `names`, listings and stats against `admin`, and handles of
// session-scoped connections against `session`.
#ifndef CONNBROKER_SERVER_CALLER_H_
#define CONNBROKER_SERVER_CALLER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "connbroker/config/name_pattern.h"

namespace connbroker::server {

struct Caller {
  // The connbroker-session id of the call ("" when it sent none).
  std::string session;
  // Connection names this caller may use: exact names, or prefixes ending in
  // '*'. Unset: any name (the Unix socket, whose directory only the daemon's
  // user -- and a group the configuration grants -- can reach).
  std::optional<std::vector<std::string>> names;
  // May list every session's connections, read daemon stats and reset.
  bool admin = true;
  // For logs and errors: "unix socket", "token 'dashboards'". Never a secret.
  std::string who = "unix socket";

  bool MayUse(absl::string_view name) const {
    return !names.has_value() || config::MatchesAnyPattern(name, *names);
  }
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_CALLER_H_
