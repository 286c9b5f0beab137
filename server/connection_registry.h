// ConnectionRegistry: the connection cache -- handles, TTL and max_entries.
//
// Reproduces st.connection's caching: a Connect with the same (spec key,
// session) and the same CacheSettings returns the same Connection and handle,
// from any client. Calls with different (ttl, max_entries) use separate
// caches, so one caller's settings never evict another's entries. In each
// cache an entry expires `ttl` after its creation, and when a new entry would
// exceed `max_entries` the least recently used one is evicted (cachetools'
// TTLCache, which Streamlit uses, orders by use).
//
// A handle outlives eviction: it names (settings, key, spec), and Get()
// rebuilds an evicted connection from that spec. Handles are random; a handle
// row whose connection is not live is forgotten after handle_idle_timeout
// unused (its next use is NOT_FOUND and the client Connects again).
//
// The daemon is shared, so everything here is bounded (RegistryLimits): live
// connections (past the bound an idle one -- no call running -- is evicted,
// least recently used first; with none idle the Connect is refused), handle
// rows and distinct caches (empty ones are deleted). A session-scoped
// connection's handle works only for the session that made it.
//
// Thread-safe. The Database factory never runs under the registry's lock;
// concurrent first Connects of one key still build one connection. Databases
// are destroyed on a thread of the registry's own, never on the caller's:
// closing one may checkpoint a file or say goodbye to a server, and the last
// reference may be dropped on a thread that must not block.
#ifndef CONNBROKER_SERVER_CONNECTION_REGISTRY_H_
#define CONNBROKER_SERVER_CONNECTION_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "connbroker/config/spec.h"
#include "server/clock.h"
#include "server/connection.h"

namespace connbroker::server {

// The (ttl, max_entries) of one cache. Unset: unbounded.
struct CacheSettings {
  std::optional<int64_t> max_entries;
  std::optional<absl::Duration> ttl;
  friend bool operator==(const CacheSettings&, const CacheSettings&) = default;
};

// Daemon-wide bounds of the registry (broker.toml [limits]).
struct RegistryLimits {
  int max_connections = 1 << 30;
  int max_handles = 1 << 30;
  absl::Duration handle_idle_timeout = absl::InfiniteDuration();
  int max_caches = 1 << 30;
};

// Which rows List() returns: global connections and the session-scoped ones
// of `session`, or every session's when `all_sessions` (an admin's view).
struct ListFilter {
  std::string session;
  bool all_sessions = false;
};

struct ConnectOutcome {
  std::shared_ptr<Connection> connection;
  bool created = false;  // false: joined an existing connection
};

// One row of ListConnections, without any secret.
struct ConnectionSnapshot {
  std::string handle;
  std::string name;
  std::string type;
  std::string description;
  config::Scope scope = config::Scope::kGlobal;
  CacheSettings settings;
  bool live = false;   // cached now (false: evicted, handle valid)
  absl::Time created;  // of the live connection
  std::optional<absl::Time> expires;
  int64_t queries = 0;  // of the live connection
  int64_t joins = 0;    // Connects that returned this handle
  v1::PoolStats pool;   // of the live connection
};

struct RegistryStats {
  int64_t live = 0;
  int64_t handles = 0;
  int64_t created = 0;  // connections built, rebuilds included
  int64_t evicted_ttl = 0;
  int64_t evicted_max_entries = 0;
  int64_t evicted_for_room = 0;  // idle, to stay under max_connections
  int64_t handles_reclaimed = 0;
  int64_t caches = 0;
  int64_t refused = 0;  // Connects refused by a RegistryLimits bound
};

class ConnectionRegistry {
 public:
  using DatabaseFactory =
      std::function<absl::StatusOr<std::unique_ptr<Database>>(
          const config::ConnectionSpec&)>;

  // `clock` must outlive the registry.
  ConnectionRegistry(const Clock* clock, DatabaseFactory factory,
                     RegistryLimits limits = {});
  ~ConnectionRegistry();

  ConnectionRegistry(const ConnectionRegistry&) = delete;
  ConnectionRegistry& operator=(const ConnectionRegistry&) = delete;

  // Finds or builds the connection for `spec` in the cache of `settings`.
  // `session_id` matters only when spec.scope is kSession (then it is part
  // of the key; an empty session id is INVALID_ARGUMENT). Factory errors are
  // returned as they are and nothing is cached. Past a RegistryLimits bound:
  // RESOURCE_EXHAUSTED naming it. ABORTED when ForgetNamed(spec.name) ran
  // while the connection was being built (resolve the spec again).
  absl::StatusOr<ConnectOutcome> Connect(const config::ConnectionSpec& spec,
                                         const CacheSettings& settings,
                                         const std::string& session_id);

  // The live connection behind `handle`, rebuilt if it was evicted.
  // NOT_FOUND ("unknown handle ...") if this daemon never issued it, forgot
  // it, or it belongs to a session-scoped connection of another session
  // (indistinguishable, so a handle cannot be probed).
  absl::StatusOr<std::shared_ptr<Connection>> Get(
      const std::string& handle, const std::string& session_id);
  // Get without blocking: null when the connection is not live (evicted,
  // or being built), instead of building it or waiting for it.
  absl::StatusOr<std::shared_ptr<Connection>> GetIfLive(
      const std::string& handle, const std::string& session_id);

  // Evicts every entry whose TTL has passed, forgets handle rows idle past
  // handle_idle_timeout and deletes empty caches. Expiry is also checked on
  // every Connect and Get, so this only makes eviction timely (janitor).
  void EvictExpired();

  // Forgets every handle of the connection named `name` (its secrets
  // section changed): their connections are evicted (closed once their last
  // call ends) and their next use is NOT_FOUND, so clients Connect again and
  // resolve the new section. A build of `name` in progress is discarded when
  // it ends, so it cannot bring a forgotten handle back. Returns the
  // forgotten connections' keys.
  std::vector<std::string> ForgetNamed(const std::string& name);

  // The handles `filter` shows, sorted by name then handle.
  std::vector<ConnectionSnapshot> List(const ListFilter& filter) const;

  // Every live connection (for the janitor's idle sweep).
  std::vector<std::shared_ptr<Connection>> LiveConnections() const;

  RegistryStats Stats() const;

 private:
  absl::StatusOr<std::shared_ptr<Connection>> GetByHandle(
      const std::string& handle, const std::string& session_id, bool only_live);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_CONNECTION_REGISTRY_H_
