// BrokerSettings: the daemon's own configuration (broker.toml), with defaults.
#ifndef CONNBROKER_CONFIG_BROKER_SETTINGS_H_
#define CONNBROKER_CONFIG_BROKER_SETTINGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "connbroker/config/value.h"

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

// Bounds of the PoolSettings fields, shared by broker.toml and
// create_engine_kwargs. A pool is shared by every client of a connection,
// so each one has a finite bound.
inline constexpr int kMaxPoolSize = 1024;
inline constexpr int kMaxPoolOverflow = 1024;
inline constexpr int kMaxPoolWaiting = 65536;

// Sets one PoolSettings field, named as the struct names it ("pool_size",
// "max_overflow", "min_idle", "acquire_timeout", "recycle", "pre_ping",
// "pre_ping_after", "idle_timeout", "max_waiting", "connect_timeout",
// "busy_timeout"), after checking the value's kind and range. Durations are
// seconds or text such as "10m"; recycle also takes -1 (never). `what` is
// the key as the user wrote it ("create_engine_kwargs.pool_size"); errors
// are INVALID_ARGUMENT "<what> must be ..." stating the range. An unknown
// field is INTERNAL (a caller's bug).
absl::Status SetPoolSetting(const std::string& field, const Value& value,
                            const std::string& what, PoolSettings& pool);

// Daemon-wide bounds ([limits] in broker.toml). The defaults fit a 2-core
// machine serving a few dozen app processes.
struct DaemonLimits {
  // Live connections, every cache and session together. Past it an idle
  // connection (no call running) is evicted to make room; if none is idle,
  // the Connect is refused.
  int max_connections = 64;
  // Handles remembered (live or evicted, every session). Handles of evicted
  // connections unused for handle_idle_timeout are forgotten first.
  int max_handles = 4096;
  absl::Duration handle_idle_timeout = absl::Hours(1);
  // Distinct (ttl, max_entries) connection caches; an empty one is deleted.
  int max_connection_caches = 64;
  // Open backends of every pool together.
  int max_backends = 128;
  // Open files of the daemon (its RLIMIT_NOFILE is raised to this when the
  // hard limit allows). A backend is not opened while fewer than
  // reserved_files stay free, so client sockets always have room.
  int max_open_files = 4096;
  int reserved_files = 256;
  // Calls running or queued on one connection (Query and Execute).
  int max_calls_per_connection = 512;
  // Session streams open at once; past it a new one is refused
  // (RESOURCE_EXHAUSTED) and the one-shot calls still work.
  int max_sessions = 1024;
  // Requests of one session read ahead of the one running; past it the
  // daemon stops reading that stream until answers have gone out.
  int max_pipelined_requests = 64;
  // Result memory: results collected for the result cache, cached, and
  // held by readers still streaming them after their eviction. A new result
  // first sheds cached ones nobody reads; past it, it streams uncached.
  int64_t max_inflight_result_bytes = 256ll << 20;
  // gRPC's own memory (its resource quota): the buffers of every client's
  // connection and streams, which under pressure it shrinks (smaller flow
  // control windows) instead of growing with the number of slow readers.
  int64_t max_transport_bytes = 128ll << 20;
};

// Who may reach the daemon ([broker] socket_group and insecure_loopback,
// [tls], [auth] in broker.toml). The daemon is closed by default: its Unix
// socket only to its own user, TCP only with TLS and bearer tokens.
struct AccessSettings {
  // A group whose members may use the Unix socket too: the socket's
  // directory is group-owned by it with mode 0710 (or 0750), the socket 0660.
  // Empty: the daemon's user only.
  std::string socket_group;
  // Plain TCP (no TLS) on a loopback address (127.0.0.0/8, ::1, localhost).
  // Anyone on the machine can then connect; tokens still apply when
  // token_files are set.
  bool insecure_loopback = false;

  // [tls]: the server's certificate chain and private key (PEM). Both or
  // neither; re-read when they change on disk.
  std::string tls_cert_file;
  std::string tls_key_file;
  // CA bundle (PEM) that client certificates are verified against. Set:
  // clients are asked for a certificate, and one they present must verify.
  std::string tls_client_ca_file;
  // With tls_client_ca_file: refuse clients that present no certificate.
  bool tls_require_client_cert = false;

  // [auth]: token files (absolute paths), each a small TOML file holding one
  // bearer token and what it may do (see LoadTokenFile in token_file.h).
  std::vector<std::string> token_files;

  bool tls() const { return !tls_cert_file.empty(); }
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
  int default_chunk_rows = 8192;  // rows per batch when a query says 0
  int64_t batch_bytes = 1 << 20;  // cut batches at about this size
  int max_attempts = 3;           // tries of a query on a broken backend
  int64_t result_cache_bytes = 256ll << 20;       // all cached results
  int64_t result_cache_entry_bytes = 64ll << 20;  // one cached result

  // Ad-hoc connections: a Connect whose name has no [connections.<name>]
  // section and whose kwargs say where to connect. Off by default: a shared
  // daemon would otherwise open any file it can read and reach any host it
  // can route to on behalf of any client. When on, a SQLite file must lie
  // inside one of ad_hoc_sqlite_dirs (in-memory is always fine) and a network
  // database must be one of ad_hoc_hosts.
  bool allow_ad_hoc = false;
  // Absolute directories, lexically normalized.
  std::vector<std::string> ad_hoc_sqlite_dirs;
  // "host", "host:port", "[v6addr]", "[v6addr]:port" (a bare host allows any
  // port), or an absolute Unix-socket path (PostgreSQL's socket directory,
  // MySQL's socket file). Host names match as written, case-insensitively;
  // nothing is resolved through DNS.
  std::vector<std::string> ad_hoc_hosts;

  // Environment variables a client may name as `name = "env:VAR"`: exact
  // names, or prefixes ending in '*' ("APP_DB_*"). Empty: env: names are
  // refused. The value is never echoed in a reply either way.
  std::vector<std::string> env_names;

  // A session's transaction idle this long (no statement running) is rolled
  // back and its backend freed ([transactions] idle_timeout), or as the
  // connection's section says ([transactions.<section>] idle_timeout).
  absl::Duration idle_in_transaction_timeout = absl::Seconds(60);
  std::map<std::string, absl::Duration> idle_in_transaction_timeouts;
  absl::Duration IdleInTransactionTimeout(const std::string& section) const {
    auto it = idle_in_transaction_timeouts.find(section);
    return it == idle_in_transaction_timeouts.end()
               ? idle_in_transaction_timeout
               : it->second;
  }

  // Daemon-wide bounds ([limits]). One client's load must not exhaust what
  // every client shares; past a bound a new request is RESOURCE_EXHAUSTED
  // naming it, and what already runs is unaffected.
  DaemonLimits limits;

  // Who may connect, and how ([tls], [auth], socket_group,
  // insecure_loopback).
  AccessSettings access;
};

// One entry of ad_hoc_hosts, parsed.
struct HostPattern {
  std::string host;         // lower case; no brackets; a socket path as is
  std::optional<int> port;  // none: any port
  bool socket = false;      // host is an absolute Unix-socket path

  friend bool operator==(const HostPattern&, const HostPattern&) = default;
};

// Parses an ad_hoc_hosts entry (forms above); INVALID_ARGUMENT saying which
// form was expected.
absl::StatusOr<HostPattern> ParseHostPattern(const std::string& entry);

// `text` as inet_ntop writes the IPv6 address it spells ("0:0::1" ->
// "::1"), or nullopt when it is not one.
std::optional<std::string> CanonicalIpv6(const std::string& text);

// Reads broker.toml:
//   [broker]  listen, secrets = [..], log_level, worker_threads,
//             socket_group = "group", insecure_loopback (bool)
//   [cache]   max_entries, ttl (seconds or "10m")
//   [pool]    the defaults of every connection's pool, overridden per
//             connection by create_engine_kwargs; SQLAlchemy's name in ():
//             pool_size 1..1024 (readers: the old name), max_overflow 0..1024,
//             min_idle 0..pool_size, acquire_timeout (pool_timeout),
//             recycle (pool_recycle; -1: never), pre_ping (pool_pre_ping),
//             pre_ping_after, idle_timeout, max_waiting 0..65536,
//             connect_timeout, busy_timeout (SQLite). Durations are seconds
//             or text such as "10m".
//   [query]   chunk_rows, batch_bytes, max_attempts
//   [result_cache] max_bytes, max_entry_bytes
//   [security] allow_ad_hoc (bool), ad_hoc_sqlite_dirs = [absolute dirs],
//             ad_hoc_hosts = ["host", "host:port", "/socket/path", ...],
//             env_names = ["VAR", "PREFIX_*"]
//   [limits]  DaemonLimits' fields, by their names (durations as above)
//   [tls]     cert_file, key_file (both or neither), client_ca_file,
//             require_client_cert (bool; needs client_ca_file)
//   [auth]    token_files = ["/abs/path", ...]
// File paths in [tls] and [auth] must be absolute.
// Unknown keys and out-of-range values are INVALID_ARGUMENT naming the file
// and key; syntax errors name file:line:column.
absl::StatusOr<BrokerSettings> LoadBrokerSettings(const std::string& path);

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_BROKER_SETTINGS_H_
