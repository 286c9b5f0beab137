// broker.toml: the daemon's own settings, validated key by key.
#include "connbroker/config/broker_settings.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "connbroker/config/duration.h"
#include "connbroker/config/toml_loader.h"

namespace connbroker::config {
namespace {

absl::Status MustBe(const std::string& what, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat(what, " must be ", rule));
}

absl::Status IntInRange(const std::string& what, const Value& value, int min,
                        int max, int& out) {
  const auto* number = std::get_if<int64_t>(&value);
  if (number == nullptr || *number < min || *number > max) {
    return MustBe(what, absl::StrCat("an integer from ", min, " to ", max));
  }
  out = static_cast<int>(*number);
  return absl::OkStatus();
}

// A duration of at least `min`; ParseDuration already refuses negatives.
absl::Status DurationAtLeast(const std::string& what, const Value& value,
                             absl::Duration min, absl::string_view rule,
                             absl::Duration& out) {
  absl::StatusOr<absl::Duration> d = ParseDuration(value, what);
  if (!d.ok()) return d.status();
  if (*d < min) return MustBe(what, rule);
  out = *d;
  return absl::OkStatus();
}

bool IsMinusOne(const Value& value) {
  if (const auto* i = std::get_if<int64_t>(&value)) return *i == -1;
  if (const auto* d = std::get_if<double>(&value)) return *d == -1.0;
  if (const auto* s = std::get_if<std::string>(&value)) {
    return absl::StripAsciiWhitespace(*s) == "-1";
  }
  return false;
}

// Applies one broker.toml key; each knows its own range.
class SettingsReader {
 public:
  SettingsReader(const std::string& path, BrokerSettings& settings)
      : path_(path), settings_(settings) {}

  absl::Status Apply(const std::string& key, const Value& value) {
    if (key == "broker.listen") return Text(key, value, settings_.listen);
    if (key == "broker.log_level") return LogLevel(key, value);
    if (key == "broker.worker_threads") {
      return Int(key, value, 1, 1024, settings_.worker_threads);
    }
    if (key == "broker.secrets") {
      // A single path may be written without the array.
      std::string path;
      if (absl::Status s = Text(key, value, path); !s.ok()) return s;
      secrets_[0] = std::move(path);
      return absl::OkStatus();
    }
    if (absl::StartsWith(key, "broker.secrets.")) {
      size_t index = 0;
      if (!absl::SimpleAtoi(key.substr(15), &index)) return Unknown(key);
      std::string path;
      if (absl::Status s = Text("broker.secrets", value, path); !s.ok()) {
        return s;
      }
      secrets_[index] = std::move(path);
      return absl::OkStatus();
    }
    if (key == "cache.max_entries") {
      int64_t max_entries = 0;
      if (absl::Status s = Int64(key, value, 1, INT64_MAX, max_entries);
          !s.ok()) {
        return s;
      }
      settings_.default_max_entries = max_entries;
      return absl::OkStatus();
    }
    if (key == "cache.ttl") {
      absl::Duration ttl;
      if (absl::Status s = Duration(key, value, ttl); !s.ok()) return s;
      settings_.default_ttl = ttl;
      return absl::OkStatus();
    }
    if (absl::StartsWith(key, "pool.")) return Pool(key, value);
    if (key == "security.allow_ad_hoc") {
      const auto* flag = std::get_if<bool>(&value);
      if (flag == nullptr) return Error(key, "must be true or false");
      settings_.allow_ad_hoc = *flag;
      return absl::OkStatus();
    }
    if (key == "security.ad_hoc_sqlite_dirs" ||
        absl::StartsWith(key, "security.ad_hoc_sqlite_dirs.")) {
      return ListEntry(key, "security.ad_hoc_sqlite_dirs", value, sqlite_dirs_);
    }
    if (key == "security.ad_hoc_hosts" ||
        absl::StartsWith(key, "security.ad_hoc_hosts.")) {
      return ListEntry(key, "security.ad_hoc_hosts", value, hosts_);
    }
    if (key == "security.env_names" ||
        absl::StartsWith(key, "security.env_names.")) {
      return ListEntry(key, "security.env_names", value, env_names_);
    }
    if (absl::StartsWith(key, "limits.")) return Limit(key, value);
    if (absl::StartsWith(key, "transactions.")) return Transactions(key, value);
    if (key == "broker.socket_group") {
      if (absl::Status s = Text(key, value, settings_.access.socket_group);
          !s.ok()) {
        return s;
      }
      if (settings_.access.socket_group.empty())
        return Error(key, "must not be empty");
      return absl::OkStatus();
    }
    if (key == "broker.insecure_loopback") {
      return Bool(key, value, settings_.access.insecure_loopback);
    }
    if (key == "tls.cert_file")
      return Path(key, value, settings_.access.tls_cert_file);
    if (key == "tls.key_file")
      return Path(key, value, settings_.access.tls_key_file);
    if (key == "tls.client_ca_file") {
      return Path(key, value, settings_.access.tls_client_ca_file);
    }
    if (key == "tls.require_client_cert") {
      return Bool(key, value, settings_.access.tls_require_client_cert);
    }
    if (key == "auth.token_files" ||
        absl::StartsWith(key, "auth.token_files.")) {
      return ListEntry(key, "auth.token_files", value, token_files_);
    }
    if (key == "query.chunk_rows") {
      return Int(key, value, 1, 1000000, settings_.default_chunk_rows);
    }
    if (key == "query.batch_bytes") {
      return Int64(key, value, 1, INT64_MAX, settings_.batch_bytes);
    }
    if (key == "query.max_attempts") {
      return Int(key, value, 1, 10, settings_.max_attempts);
    }
    if (key == "result_cache.max_bytes") {
      return Int64(key, value, 1, INT64_MAX, settings_.result_cache_bytes);
    }
    if (key == "result_cache.max_entry_bytes") {
      return Int64(key, value, 1, INT64_MAX,
                   settings_.result_cache_entry_bytes);
    }
    return Unknown(key);
  }

  // Array entries arrive as secrets.0, secrets.1, ... sorted as text
  // ("10" before "2"); the maps put them back in numeric order.
  absl::Status Finish() {
    if (absl::Status s = FinishAccess(); !s.ok()) return s;
    if (!secrets_.empty()) {
      settings_.secrets.clear();
      for (auto& [index, path] : secrets_) {
        settings_.secrets.push_back(std::move(path));
      }
    }
    for (auto& [index, dir] : sqlite_dirs_) {
      // Relative to what? The daemon's working directory is an accident of
      // how it was started; an allow-list must not depend on it.
      const std::filesystem::path path(dir);
      if (!path.is_absolute()) {
        return Error("security.ad_hoc_sqlite_dirs",
                     absl::StrCat("must hold absolute directories; '", dir,
                                  "' is relative"));
      }
      std::filesystem::path normal = path.lexically_normal();
      if (!normal.has_filename() && normal != normal.root_path()) {
        normal = normal.parent_path();  // "/srv/dbs/" -> "/srv/dbs"
      }
      settings_.ad_hoc_sqlite_dirs.push_back(normal.string());
    }
    for (auto& [index, name] : env_names_) {
      const absl::string_view stem = absl::StripSuffix(name, "*");
      if (stem.empty() ||
          stem.find_first_not_of(
              "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
              "0123456789_") != absl::string_view::npos) {
        return Error("security.env_names",
                     absl::StrCat("holds '", name,
                                  "': expected a variable name, or a prefix "
                                  "ending in '*'"));
      }
      settings_.env_names.push_back(std::move(name));
    }
    if (settings_.limits.reserved_files >= settings_.limits.max_open_files) {
      return Error("limits.reserved_files",
                   absl::StrCat("must be below limits.max_open_files (",
                                settings_.limits.max_open_files, ")"));
    }
    for (auto& [index, host] : hosts_) {
      absl::StatusOr<HostPattern> pattern = ParseHostPattern(host);
      if (!pattern.ok()) {
        return Error(
            "security.ad_hoc_hosts",
            absl::StrCat("holds '", host, "': ", pattern.status().message()));
      }
      settings_.ad_hoc_hosts.push_back(std::move(host));
    }
    if (pool_keys_.contains("min_idle") &&
        settings_.pool.min_idle > settings_.pool.pool_size) {
      return Error("pool.min_idle",
                   absl::StrCat("must not exceed pool.pool_size (",
                                settings_.pool.pool_size, ")"));
    }
    // Only pool_size given: the default min_idle follows it down.
    settings_.pool.min_idle =
        std::min(settings_.pool.min_idle, settings_.pool.pool_size);
    return absl::OkStatus();
  }

 private:
  // [tls] and [auth]: what only makes sense together.
  absl::Status FinishAccess() {
    for (auto& [index, file] : token_files_) {
      if (!std::filesystem::path(file).is_absolute()) {
        return Error(
            "auth.token_files",
            absl::StrCat("must hold absolute paths; '", file, "' is relative"));
      }
      settings_.access.token_files.push_back(std::move(file));
    }
    if (settings_.access.tls_cert_file.empty() !=
        settings_.access.tls_key_file.empty()) {
      return Error(settings_.access.tls_cert_file.empty() ? "tls.key_file"
                                                          : "tls.cert_file",
                   "needs its partner: set both tls.cert_file and "
                   "tls.key_file");
    }
    if (!settings_.access.tls_client_ca_file.empty() &&
        !settings_.access.tls()) {
      return Error("tls.client_ca_file",
                   "needs tls.cert_file and tls.key_file");
    }
    if (settings_.access.tls_require_client_cert &&
        settings_.access.tls_client_ca_file.empty()) {
      return Error("tls.require_client_cert",
                   "needs tls.client_ca_file to verify the certificates "
                   "against");
    }
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& key, const Value& value,
                    bool& out) const {
    const auto* flag = std::get_if<bool>(&value);
    if (flag == nullptr) return Error(key, "must be true or false");
    out = *flag;
    return absl::OkStatus();
  }

  // An absolute file path: relative ones would depend on the directory the
  // daemon happened to be started in.
  absl::Status Path(const std::string& key, const Value& value,
                    std::string& out) const {
    if (absl::Status s = Text(key, value, out); !s.ok()) return s;
    if (!std::filesystem::path(out).is_absolute()) {
      return Error(key, absl::StrCat("must be an absolute path; '", out,
                                     "' is relative"));
    }
    return absl::OkStatus();
  }

  absl::Status Error(const std::string& key, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": '", key, "' ", what));
  }
  absl::Status Unknown(const std::string& key) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": unknown key '", key, "'"));
  }

  absl::Status Text(const std::string& key, const Value& value,
                    std::string& out) const {
    const auto* text = std::get_if<std::string>(&value);
    if (text == nullptr) return Error(key, "must be a string");
    out = *text;
    return absl::OkStatus();
  }

  absl::Status Int64(const std::string& key, const Value& value, int64_t min,
                     int64_t max, int64_t& out) const {
    const auto* number = std::get_if<int64_t>(&value);
    if (number == nullptr || *number < min || *number > max) {
      return Error(key, max == INT64_MAX
                            ? absl::StrCat("must be an integer >= ", min)
                            : absl::StrCat("must be an integer from ", min,
                                           " to ", max));
    }
    out = *number;
    return absl::OkStatus();
  }

  absl::Status Int(const std::string& key, const Value& value, int min, int max,
                   int& out) const {
    int64_t number = 0;
    if (absl::Status s = Int64(key, value, min, max, number); !s.ok()) {
      return s;
    }
    out = static_cast<int>(number);
    return absl::OkStatus();
  }

  absl::Status Duration(const std::string& key, const Value& value,
                        absl::Duration& out) const {
    absl::StatusOr<absl::Duration> d =
        ParseDuration(value, absl::StrCat(path_, ": '", key, "'"));
    if (!d.ok()) return d.status();
    out = *d;
    return absl::OkStatus();
  }

  // [transactions] idle_timeout, and [transactions.<section>] idle_timeout
  // for one secrets section.
  absl::Status Transactions(const std::string& key, const Value& value) {
    absl::string_view rest = absl::string_view(key).substr(13);
    if (!absl::ConsumeSuffix(&rest, "idle_timeout")) return Unknown(key);
    absl::Duration d;
    if (absl::Status s = Duration(key, value, d); !s.ok()) return s;
    // A transaction holds a backend (SQLite: the only writer) from every
    // other client; it must end on its own.
    if (d < absl::Seconds(1) || d > absl::Hours(24)) {
      return Error(key, "must be between 1s and 24h");
    }
    if (rest.empty()) {
      settings_.idle_in_transaction_timeout = d;
    } else if (absl::ConsumeSuffix(&rest, ".") && !rest.empty()) {
      settings_.idle_in_transaction_timeouts[std::string(rest)] = d;
    } else {
      return Unknown(key);
    }
    return absl::OkStatus();
  }

  // [limits]: DaemonLimits' fields by name.
  absl::Status Limit(const std::string& key, const Value& value) {
    DaemonLimits& limits = settings_.limits;
    const std::string field = key.substr(7);
    if (field == "max_connections") {
      return Int(key, value, 1, 100000, limits.max_connections);
    }
    if (field == "max_handles") {
      return Int(key, value, 1, 10000000, limits.max_handles);
    }
    if (field == "handle_idle_timeout") {
      absl::Duration d;
      if (absl::Status s = Duration(key, value, d); !s.ok()) return s;
      if (d < absl::Seconds(1)) return Error(key, "must be at least 1s");
      limits.handle_idle_timeout = d;
      return absl::OkStatus();
    }
    if (field == "max_connection_caches") {
      return Int(key, value, 1, 100000, limits.max_connection_caches);
    }
    if (field == "max_backends") {
      return Int(key, value, 1, 100000, limits.max_backends);
    }
    if (field == "max_open_files") {
      return Int(key, value, 64, 1048576, limits.max_open_files);
    }
    if (field == "reserved_files") {
      return Int(key, value, 16, 1048576, limits.reserved_files);
    }
    if (field == "max_sessions") {
      return Int(key, value, 1, 1000000, limits.max_sessions);
    }
    if (field == "max_pipelined_requests") {
      return Int(key, value, 1, 65536, limits.max_pipelined_requests);
    }
    if (field == "max_calls_per_connection") {
      return Int(key, value, 1, 1000000, limits.max_calls_per_connection);
    }
    if (field == "max_transport_bytes") {
      return Int64(key, value, 1 << 20, INT64_MAX, limits.max_transport_bytes);
    }
    if (field == "max_inflight_result_bytes") {
      return Int64(key, value, 0, INT64_MAX, limits.max_inflight_result_bytes);
    }
    return Unknown(key);
  }

  // [pool]: PoolSettings' own names, SQLAlchemy's pool_* names, and
  // `readers` (the name before pool_size existed).
  absl::Status Pool(const std::string& key, const Value& value) {
    static const std::map<std::string, std::string> kAliases = {
        {"readers", "pool_size"},
        {"pool_timeout", "acquire_timeout"},
        {"pool_recycle", "recycle"},
        {"pool_pre_ping", "pre_ping"},
        {"pool_size", "pool_size"},
        {"max_overflow", "max_overflow"},
        {"min_idle", "min_idle"},
        {"acquire_timeout", "acquire_timeout"},
        {"recycle", "recycle"},
        {"pre_ping", "pre_ping"},
        {"pre_ping_after", "pre_ping_after"},
        {"idle_timeout", "idle_timeout"},
        {"max_waiting", "max_waiting"},
        {"connect_timeout", "connect_timeout"},
        {"busy_timeout", "busy_timeout"},
    };
    const std::string name = key.substr(5);
    auto it = kAliases.find(name);
    if (it == kAliases.end()) return Unknown(key);
    const std::string& field = it->second;
    // Two spellings of one setting would leave which one wins to the order
    // of the keys in the file.
    if (auto [seen, inserted] = pool_keys_.emplace(field, name); !inserted) {
      return Error(key, absl::StrCat("sets the same setting as 'pool.",
                                     seen->second, "'; keep one of them"));
    }
    return SetPoolSetting(field, value, absl::StrCat(path_, ": '", key, "'"),
                          settings_.pool);
  }

  // One entry of a list of strings (a single string is a one-entry list).
  absl::Status ListEntry(const std::string& key, const std::string& list,
                         const Value& value,
                         std::map<size_t, std::string>& out) const {
    size_t index = 0;
    if (key != list &&
        !absl::SimpleAtoi(absl::string_view(key).substr(list.size() + 1),
                          &index)) {
      return Unknown(key);
    }
    const auto* text = std::get_if<std::string>(&value);
    if (text == nullptr || text->empty()) {
      return Error(list, "must be a list of non-empty strings");
    }
    out[index] = *text;
    return absl::OkStatus();
  }

  absl::Status LogLevel(const std::string& key, const Value& value) {
    std::string level;
    if (absl::Status s = Text(key, value, level); !s.ok()) return s;
    for (const char* known : {"trace", "debug", "info", "warn", "error"}) {
      if (level == known) {
        settings_.log_level = level;
        return absl::OkStatus();
      }
    }
    return Error(key, "must be one of trace, debug, info, warn, error");
  }

  const std::string& path_;
  BrokerSettings& settings_;
  std::map<size_t, std::string> secrets_;
  std::map<size_t, std::string> sqlite_dirs_;
  std::map<size_t, std::string> hosts_;
  std::map<size_t, std::string> env_names_;
  std::map<size_t, std::string> token_files_;
  // PoolSettings field -> the [pool] key that set it.
  std::map<std::string, std::string> pool_keys_;
};

}  // namespace

absl::Status SetPoolSetting(const std::string& field, const Value& value,
                            const std::string& what, PoolSettings& pool) {
  if (field == "pool_size") {
    return IntInRange(what, value, 1, kMaxPoolSize, pool.pool_size);
  }
  if (field == "max_overflow") {
    if (IsMinusOne(value)) {
      // SQLAlchemy's "no limit": one daemon's pool serves every client, so
      // an unbounded one could open as many backends as there are callers.
      return MustBe(what,
                    absl::StrCat("an integer from 0 to ", kMaxPoolOverflow,
                                 "; -1 (SQLAlchemy's \"no limit\") is "
                                 "refused because the broker's pool is "
                                 "shared and needs a bound"));
    }
    return IntInRange(what, value, 0, kMaxPoolOverflow, pool.max_overflow);
  }
  if (field == "min_idle") {
    return IntInRange(what, value, 0, kMaxPoolSize, pool.min_idle);
  }
  if (field == "max_waiting") {
    return IntInRange(what, value, 0, kMaxPoolWaiting, pool.max_waiting);
  }
  if (field == "pre_ping") {
    const auto* flag = std::get_if<bool>(&value);
    if (flag == nullptr) return MustBe(what, "true or false");
    pool.pre_ping = *flag;
    return absl::OkStatus();
  }
  if (field == "recycle") {
    if (IsMinusOne(value)) {
      pool.recycle = absl::InfiniteDuration();
      return absl::OkStatus();
    }
    // Recycling more often than every second reconnects on nearly every
    // checkout: load on the database, not a setting anyone means.
    return DurationAtLeast(what, value, absl::Seconds(1),
                           "-1 (never) or a duration of at least 1 second",
                           pool.recycle);
  }
  if (field == "idle_timeout") {
    return DurationAtLeast(what, value, absl::Seconds(1),
                           "a duration of at least 1 second",
                           pool.idle_timeout);
  }
  if (field == "connect_timeout") {
    // 0 would mean "wait forever" to libpq but "fail at once" to others.
    return DurationAtLeast(what, value, absl::Milliseconds(1),
                           "a positive duration", pool.connect_timeout);
  }
  absl::Duration* duration = nullptr;
  if (field == "acquire_timeout") duration = &pool.acquire_timeout;
  if (field == "pre_ping_after") duration = &pool.pre_ping_after;
  if (field == "busy_timeout") duration = &pool.busy_timeout;
  if (duration != nullptr) {
    return DurationAtLeast(what, value, absl::ZeroDuration(),
                           "a duration of 0 or more", *duration);
  }
  return absl::InternalError(
      absl::StrCat("no pool setting named '", field, "'"));
}

std::optional<std::string> CanonicalIpv6(const std::string& text) {
  in6_addr address;
  if (inet_pton(AF_INET6, text.c_str(), &address) != 1) return std::nullopt;
  char out[INET6_ADDRSTRLEN];
  if (inet_ntop(AF_INET6, &address, out, sizeof(out)) == nullptr) {
    return std::nullopt;
  }
  return std::string(out);
}

absl::StatusOr<HostPattern> ParseHostPattern(const std::string& entry) {
  static constexpr char kForms[] =
      "expected \"host\", \"host:port\", \"[ipv6]\", \"[ipv6]:port\" or "
      "an absolute Unix-socket path";
  HostPattern pattern;
  absl::string_view rest = absl::StripAsciiWhitespace(entry);
  if (absl::StartsWith(rest, "/")) {
    pattern.socket = true;
    std::filesystem::path path =
        std::filesystem::path(std::string(rest)).lexically_normal();
    // "/run/postgresql/" and "/run/postgresql" are one directory.
    if (!path.has_filename() && path.has_parent_path() &&
        path != path.root_path()) {
      path = path.parent_path();
    }
    pattern.host = path.string();
    return pattern;
  }
  std::optional<absl::string_view> port_text;
  bool ipv6 = false;
  if (absl::ConsumePrefix(&rest, "[")) {
    const size_t close = rest.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(kForms);
    }
    pattern.host = std::string(rest.substr(0, close));
    ipv6 = true;
    rest.remove_prefix(close + 1);
    if (absl::ConsumePrefix(&rest, ":")) {
      port_text = rest;
    } else if (!rest.empty()) {
      return absl::InvalidArgumentError(kForms);
    }
  } else if (std::count(rest.begin(), rest.end(), ':') > 1) {
    // A bare IPv6 address: a port cannot follow it without brackets.
    pattern.host = std::string(rest);
    ipv6 = true;
  } else if (const size_t colon = rest.find(':');
             colon != absl::string_view::npos) {
    pattern.host = std::string(rest.substr(0, colon));
    port_text = rest.substr(colon + 1);
  } else {
    pattern.host = std::string(rest);
  }
  if (ipv6) {
    // One spelling per address ("0:0::1" and "::1" are the same host).
    std::optional<std::string> canonical = CanonicalIpv6(pattern.host);
    if (!canonical.has_value()) return absl::InvalidArgumentError(kForms);
    pattern.host = *std::move(canonical);
  } else if (pattern.host.empty() ||
             !std::all_of(pattern.host.begin(), pattern.host.end(), [](char c) {
               return absl::ascii_isalnum(c) || c == '.' || c == '-' ||
                      c == '_';
             })) {
    // Only what a host name is made of, so an entry never matches more
    // than it reads as.
    return absl::InvalidArgumentError(kForms);
  }
  if (port_text.has_value()) {
    int port = 0;
    if (!absl::SimpleAtoi(*port_text, &port) || port < 1 || port > 65535) {
      return absl::InvalidArgumentError(
          "the port must be a number from 1 to 65535");
    }
    pattern.port = port;
  }
  absl::AsciiStrToLower(&pattern.host);
  return pattern;
}

absl::StatusOr<BrokerSettings> LoadBrokerSettings(const std::string& path) {
  absl::StatusOr<Params> params = LoadTomlFile(path);
  if (!params.ok()) return params.status();
  BrokerSettings settings;
  SettingsReader reader(path, settings);
  for (const auto& [key, value] : *params) {
    if (absl::Status s = reader.Apply(key, value); !s.ok()) return s;
  }
  if (absl::Status s = reader.Finish(); !s.ok()) return s;
  if (settings.result_cache_entry_bytes > settings.result_cache_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": 'result_cache.max_entry_bytes' must not exceed "
                     "'result_cache.max_bytes'"));
  }
  return settings;
}

}  // namespace connbroker::config
