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

// Pool sizes and timeouts of one connection's backends.
struct PoolSettings {
  int readers = 4;                                     // read-only backends
  absl::Duration acquire_timeout = absl::Seconds(10);  // wait for a free one
  absl::Duration busy_timeout = absl::Seconds(5);      // SQLite lock wait
  absl::Duration idle_timeout = absl::Minutes(10);     // close unused backends

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
