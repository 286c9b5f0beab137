// Tests of broker.toml loading: defaults, every key, ranges, unknown keys.
#include "connbroker/config/broker_settings.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace connbroker::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class BrokerSettingsTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    return dir_.Write("broker.toml", text);
  }

 private:
  testing::TempDir dir_;
};

TEST_F(BrokerSettingsTest, EmptyFileGivesDefaults) {
  absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(Write(""));
  ASSERT_TRUE(s.ok()) << s.status();
  const BrokerSettings defaults;
  EXPECT_EQ(s->listen, "");
  EXPECT_TRUE(s->secrets.empty());
  EXPECT_EQ(s->log_level, "info");
  EXPECT_FALSE(s->default_max_entries.has_value());
  EXPECT_FALSE(s->default_ttl.has_value());
  EXPECT_EQ(s->pool, defaults.pool);
  EXPECT_EQ(s->worker_threads, 16);
  EXPECT_EQ(s->max_attempts, 3);
}

TEST_F(BrokerSettingsTest, ReadsEveryKey) {
  std::string text = R"(
[broker]
listen = "unix:/run/connbroker.sock"
secrets = ["/a.toml", "/b.toml", "/c.toml", "/d.toml", "/e.toml", "/f.toml",
           "/g.toml", "/h.toml", "/i.toml", "/j.toml", "/k.toml"]
log_level = "debug"
worker_threads = 8
[cache]
max_entries = 100
ttl = "10m"
[pool]
readers = 2
acquire_timeout = 3
busy_timeout = "500ms"
idle_timeout = "1h"
[query]
chunk_rows = 500
batch_bytes = 4096
max_attempts = 5
[result_cache]
max_bytes = 1000000
max_entry_bytes = 1000
)";
  absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(Write(text));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->listen, "unix:/run/connbroker.sock");
  // Eleven entries: "secrets.10" must come after "secrets.9", not "1".
  ASSERT_EQ(s->secrets.size(), 11u);
  EXPECT_EQ(s->secrets[0], "/a.toml");
  EXPECT_EQ(s->secrets[2], "/c.toml");
  EXPECT_EQ(s->secrets[10], "/k.toml");
  EXPECT_EQ(s->log_level, "debug");
  EXPECT_EQ(s->worker_threads, 8);
  EXPECT_EQ(s->default_max_entries, 100);
  EXPECT_EQ(s->default_ttl, absl::Minutes(10));
  EXPECT_EQ(s->pool.pool_size, 2);
  EXPECT_EQ(s->pool.acquire_timeout, absl::Seconds(3));
  EXPECT_EQ(s->pool.busy_timeout, absl::Milliseconds(500));
  EXPECT_EQ(s->pool.idle_timeout, absl::Hours(1));
  EXPECT_EQ(s->default_chunk_rows, 500);
  EXPECT_EQ(s->batch_bytes, 4096);
  EXPECT_EQ(s->max_attempts, 5);
  EXPECT_EQ(s->result_cache_bytes, 1000000);
  EXPECT_EQ(s->result_cache_entry_bytes, 1000);
}

TEST_F(BrokerSettingsTest, SingleSecretsPath) {
  absl::StatusOr<BrokerSettings> s =
      LoadBrokerSettings(Write("[broker]\nsecrets = \"/only.toml\"\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(s->secrets, ElementsAre("/only.toml"));
}

TEST_F(BrokerSettingsTest, UnknownKeysAreNamed) {
  for (const auto& [text, key] :
       std::vector<std::pair<std::string, std::string>>{
           {"[pool]\nreaderz = 3\n", "pool.readerz"},
           {"[nosuch]\nx = 1\n", "nosuch.x"},
           {"toplevel = 1\n", "toplevel"}}) {
    const std::string path = Write(text);
    absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(path);
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.status().message(), path + ": unknown key '" + key + "'");
  }
}

TEST_F(BrokerSettingsTest, OutOfRangeValuesAreNamed) {
  for (const auto& [text, key] :
       std::vector<std::pair<std::string, std::string>>{
           {"[pool]\nreaders = 0\n", "pool.readers"},
           {"[pool]\nreaders = 1025\n", "pool.readers"},
           {"[broker]\nworker_threads = 0\n", "broker.worker_threads"},
           {"[broker]\nworker_threads = 2000\n", "broker.worker_threads"},
           {"[query]\nchunk_rows = 1000001\n", "query.chunk_rows"},
           {"[query]\nchunk_rows = 0\n", "query.chunk_rows"},
           {"[query]\nmax_attempts = 11\n", "query.max_attempts"},
           {"[query]\nmax_attempts = 0\n", "query.max_attempts"},
           {"[query]\nbatch_bytes = 0\n", "query.batch_bytes"},
           {"[result_cache]\nmax_bytes = -1\n", "result_cache.max_bytes"},
           {"[result_cache]\nmax_entry_bytes = 0\n",
            "result_cache.max_entry_bytes"},
           {"[cache]\nmax_entries = 0\n", "cache.max_entries"},
           {"[cache]\nttl = \"-5m\"\n", "cache.ttl"},
           {"[pool]\nbusy_timeout = \"soon\"\n", "pool.busy_timeout"},
           {"[pool]\nreaders = \"4\"\n", "pool.readers"},
           {"[broker]\nlog_level = \"loud\"\n", "broker.log_level"},
           {"[broker]\nlisten = 5\n", "broker.listen"}}) {
    const std::string path = Write(text);
    absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(path);
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(s.status().message()), StartsWith(path + ": "));
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("'" + key + "'"))
        << text;
  }
}

TEST_F(BrokerSettingsTest, EntryLargerThanCacheIsInvalid) {
  absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(
      Write("[result_cache]\nmax_bytes = 10\nmax_entry_bytes = 11\n"));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("result_cache.max_entry_bytes"));
}

TEST_F(BrokerSettingsTest, SyntaxErrorNamesLineAndColumn) {
  const std::string path = Write("[pool]\nreaders = 2\nbusy_timeout 5\n");
  absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), StartsWith(path + ":3:13: "));
}

TEST_F(BrokerSettingsTest, MissingFileIsNotFound) {
  absl::StatusOr<BrokerSettings> s =
      LoadBrokerSettings("/nonexistent/connbroker/broker.toml");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("/nonexistent/connbroker/broker.toml"));
}

}  // namespace
}  // namespace connbroker::config
