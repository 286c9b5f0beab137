// BrokerSettings: the daemon's own configuration (broker.toml), with defaults.
#ifndef CONNBROKER_CONFIG_BROKER_SETTINGS_H_
#define CONNBROKER_CONFIG_BROKER_SETTINGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace connbroker::config {

// Pool sizes and timeouts of one connection's backends, under SQLAlchemy's
// names where it has one (create_engine_kwargs in a secrets section,
// [pool] in broker.toml).
struct PoolSettings {
  // Backends kept open (SQLite: read-only readers; its writer is one more).
  int pool_size = 5;
  // Backends opened beyond pool_size under load; closed as they come back
  // while pool_size others are idle. Not used by SQLite.
  int max_overflow = 10;
  // Kept open even when idle (opened by the janitor); <= pool_size.
  int min_idle = 0;
  absl::Duration acquire_timeout = absl::Seconds(10);  // pool_timeout
  // A backend older than this is closed instead of reused (pool_recycle);
  // infinite: never.
  absl::Duration recycle = absl::InfiniteDuration();
  // Check a backend unused for pre_ping_after before handing it out.
  bool pre_ping = false;
  absl::Duration pre_ping_after = absl::Seconds(1);
  absl::Duration idle_timeout = absl::Minutes(10);  // close unused backends
  // Calls waiting for a backend of one connection; more are refused with
  // RESOURCE_EXHAUSTED instead of queueing without bound.
  int max_waiting = 256;
  absl::Duration connect_timeout = absl::Seconds(10);  // network databases
  absl::Duration busy_timeout = absl::Seconds(5);      // SQLite lock wait

  friend bool operator==(const PoolSettings&, const PoolSettings&) = default;
};

struct BrokerSettings {
  std::string listen;  // "unix:/path" or "host:port"; "" = default
  std::vector<std::string> secrets;  // secrets files; empty = discovery
  std::string log_level = "info";    // trace, debug, info, warn, error

  // Used when a Connect does not say (Streamlit's defaults: unbounded).
  std::optional<int64_t> default_max_entries;
  std::optional<absl::Duration> default_ttl;

  PoolSettings pool;

  int worker_threads = 16;        // database work runs here
  int default_chunk_rows = 1024;  // rows per batch when a query says 0
  int64_t batch_bytes = 1 << 20;  // cut batches at about this size
  int max_attempts = 3;           // tries of a query on a broken backend
  int64_t result_cache_bytes = 256ll << 20;       // all cached results
  int64_t result_cache_entry_bytes = 64ll << 20;  // one cached result
};

// Reads broker.toml:
//   [broker]  listen, secrets = [..], log_level, worker_threads
//   [cache]   max_entries, ttl (seconds or "10m")
//   [pool]    readers, acquire_timeout, busy_timeout, idle_timeout
//   [query]   chunk_rows, batch_bytes, max_attempts
//   [result_cache] max_bytes, max_entry_bytes
// Unknown keys and out-of-range values are INVALID_ARGUMENT naming the file
// and key; syntax errors name file:line:column.
absl::StatusOr<BrokerSettings> LoadBrokerSettings(const std::string& path);

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_BROKER_SETTINGS_H_
