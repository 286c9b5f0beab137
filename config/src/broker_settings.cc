// broker.toml: the daemon's own settings, validated key by key.
#include "connbroker/config/broker_settings.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "connbroker/config/duration.h"
#include "connbroker/config/toml_loader.h"

namespace connbroker::config {
namespace {

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
    if (key == "pool.readers") {
      return Int(key, value, 1, 1024, settings_.pool.pool_size);
    }
    if (key == "pool.acquire_timeout") {
      return Duration(key, value, settings_.pool.acquire_timeout);
    }
    if (key == "pool.busy_timeout") {
      return Duration(key, value, settings_.pool.busy_timeout);
    }
    if (key == "pool.idle_timeout") {
      return Duration(key, value, settings_.pool.idle_timeout);
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
  // ("10" before "2"); the map puts them back in numeric order.
  void Finish() {
    if (secrets_.empty()) return;
    settings_.secrets.clear();
    for (auto& [index, path] : secrets_) {
      settings_.secrets.push_back(std::move(path));
    }
  }

 private:
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
};

}  // namespace

absl::StatusOr<BrokerSettings> LoadBrokerSettings(const std::string& path) {
  absl::StatusOr<Params> params = LoadTomlFile(path);
  if (!params.ok()) return params.status();
  BrokerSettings settings;
  SettingsReader reader(path, settings);
  for (const auto& [key, value] : *params) {
    if (absl::Status s = reader.Apply(key, value); !s.ok()) return s;
  }
  reader.Finish();
  if (settings.result_cache_entry_bytes > settings.result_cache_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": 'result_cache.max_entry_bytes' must not exceed "
                     "'result_cache.max_bytes'"));
  }
  return settings;
}

}  // namespace connbroker::config
