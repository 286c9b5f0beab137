// Tests of broker.toml loading: defaults, every key, ranges, unknown keys.
#include "connbroker/config/broker_settings.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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
pool_size = 2
max_overflow = 3
min_idle = 1
acquire_timeout = 3
recycle = "30m"
pre_ping = true
pre_ping_after = "2s"
idle_timeout = "1h"
max_waiting = 10
connect_timeout = 7
busy_timeout = "500ms"
[query]
chunk_rows = 500
batch_bytes = 4096
max_attempts = 5
[result_cache]
max_bytes = 1000000
max_entry_bytes = 1000
[security]
allow_ad_hoc = true
ad_hoc_sqlite_dirs = ["/srv/dbs/", "/var/lib/app/../scratch"]
ad_hoc_hosts = ["db.internal", "pg2:6432", "[::1]:5432", "/run/postgresql"]
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
  EXPECT_EQ(s->pool.max_overflow, 3);
  EXPECT_EQ(s->pool.min_idle, 1);
  EXPECT_EQ(s->pool.acquire_timeout, absl::Seconds(3));
  EXPECT_EQ(s->pool.recycle, absl::Minutes(30));
  EXPECT_TRUE(s->pool.pre_ping);
  EXPECT_EQ(s->pool.pre_ping_after, absl::Seconds(2));
  EXPECT_EQ(s->pool.idle_timeout, absl::Hours(1));
  EXPECT_EQ(s->pool.max_waiting, 10);
  EXPECT_EQ(s->pool.connect_timeout, absl::Seconds(7));
  EXPECT_EQ(s->pool.busy_timeout, absl::Milliseconds(500));
  EXPECT_TRUE(s->allow_ad_hoc);
  EXPECT_THAT(s->ad_hoc_sqlite_dirs,
              ElementsAre("/srv/dbs", "/var/lib/scratch"));
  EXPECT_THAT(s->ad_hoc_hosts, ElementsAre("db.internal", "pg2:6432",
                                           "[::1]:5432", "/run/postgresql"));
  EXPECT_EQ(s->default_chunk_rows, 500);
  EXPECT_EQ(s->batch_bytes, 4096);
  EXPECT_EQ(s->max_attempts, 5);
  EXPECT_EQ(s->result_cache_bytes, 1000000);
  EXPECT_EQ(s->result_cache_entry_bytes, 1000);
}

TEST_F(BrokerSettingsTest, EmptyFileDefaultsAreSafe) {
  absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(Write(""));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->allow_ad_hoc);
  EXPECT_TRUE(s->ad_hoc_sqlite_dirs.empty());
  EXPECT_TRUE(s->ad_hoc_hosts.empty());
  EXPECT_EQ(s->pool.recycle, absl::InfiniteDuration());
  EXPECT_LE(s->pool.min_idle, s->pool.pool_size);
}

TEST_F(BrokerSettingsTest, PoolTakesSqlAlchemyNamesAndReaders) {
  absl::StatusOr<BrokerSettings> s =
      LoadBrokerSettings(Write("[pool]\nreaders = 6\npool_timeout = \"1m\"\n"
                               "pool_recycle = -1\npool_pre_ping = true\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->pool.pool_size, 6);
  EXPECT_EQ(s->pool.acquire_timeout, absl::Minutes(1));
  EXPECT_EQ(s->pool.recycle, absl::InfiniteDuration());
  EXPECT_TRUE(s->pool.pre_ping);

  s = LoadBrokerSettings(Write("[pool]\npool_recycle = 3600\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->pool.recycle, absl::Hours(1));
}

TEST_F(BrokerSettingsTest, TwoNamesForOneSettingAreRefused) {
  for (const auto& [text, message] :
       std::vector<std::pair<std::string, std::string>>{
           {"[pool]\npool_size = 2\nreaders = 3\n",
            "'pool.readers' sets the same setting as 'pool.pool_size'"},
           {"[pool]\nacquire_timeout = 2\npool_timeout = 3\n",
            "'pool.pool_timeout' sets the same setting as "
            "'pool.acquire_timeout'"},
           {"[pool]\npool_pre_ping = true\npre_ping = false\n",
            "'pool.pre_ping' sets the same setting as 'pool.pool_pre_ping'"},
       }) {
    const std::string path = Write(text);
    absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(path);
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(message));
  }
}

TEST_F(BrokerSettingsTest, MinIdleAndPoolSize) {
  // pool_size alone takes the default min_idle down with it; an explicit
  // min_idle must fit.
  absl::StatusOr<BrokerSettings> s =
      LoadBrokerSettings(Write("[pool]\npool_size = 1\nmin_idle = 1\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->pool.min_idle, 1);
  const std::string path = Write("[pool]\npool_size = 2\nmin_idle = 3\n");
  s = LoadBrokerSettings(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(),
            path + ": 'pool.min_idle' must not exceed pool.pool_size (2)");
}

TEST_F(BrokerSettingsTest, SecuritySettingsAreChecked) {
  for (const auto& [text, message] :
       std::vector<std::pair<std::string, std::string>>{
           {"[security]\nallow_ad_hoc = \"yes\"\n",
            "'security.allow_ad_hoc' must be true or false"},
           {"[security]\nad_hoc_sqlite_dirs = [\"data\"]\n",
            "'security.ad_hoc_sqlite_dirs' must hold absolute directories; "
            "'data' is relative"},
           {"[security]\nad_hoc_sqlite_dirs = [1]\n",
            "'security.ad_hoc_sqlite_dirs' must be a list of non-empty "
            "strings"},
           {"[security]\nad_hoc_hosts = [\"db:99999\"]\n",
            "'security.ad_hoc_hosts' holds 'db:99999': the port must be a "
            "number from 1 to 65535"},
           {"[security]\nad_hoc_hosts = [\"db:\"]\n",
            "'security.ad_hoc_hosts' holds 'db:': the port"},
           {"[security]\nad_hoc_hosts = [\"user@db\"]\n",
            "'security.ad_hoc_hosts' holds 'user@db': expected \"host\", "
            "\"host:port\""},
           {"[security]\nad_hoc_hosts = [\"\"]\n",
            "'security.ad_hoc_hosts' must be a list of non-empty strings"},
           {"[security]\nallow_adhoc = true\n",
            "unknown key 'security.allow_adhoc'"},
       }) {
    const std::string path = Write(text);
    absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(path);
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(s.status().message()),
                StartsWith(path + ": " + message));
  }
  // A single string is a one-entry list.
  absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(
      Write("[security]\nad_hoc_hosts = \"db\"\nad_hoc_sqlite_dirs = "
            "\"/srv\"\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(s->ad_hoc_hosts, ElementsAre("db"));
  EXPECT_THAT(s->ad_hoc_sqlite_dirs, ElementsAre("/srv"));
}

TEST(HostPatternTest, Forms) {
  struct Case {
    std::string entry;
    HostPattern expected;
  };
  const Case cases[] = {
      {"db.internal", {"db.internal", std::nullopt, false}},
      {"DB.Internal:5432", {"db.internal", 5432, false}},
      {" 10.0.0.5:3306 ", {"10.0.0.5", 3306, false}},
      {"[::1]", {"::1", std::nullopt, false}},
      {"[::1]:5432", {"::1", 5432, false}},
      {"fe80::1", {"fe80::1", std::nullopt, false}},
      {"[0:0:0:0:0:0:0:1]:5432", {"::1", 5432, false}},
      {"/run/postgresql/", {"/run/postgresql", std::nullopt, true}},
      {"/run/mysqld/../mysqld/mysqld.sock",
       {"/run/mysqld/mysqld.sock", std::nullopt, true}},
  };
  for (const Case& c : cases) {
    absl::StatusOr<HostPattern> p = ParseHostPattern(c.entry);
    ASSERT_TRUE(p.ok()) << c.entry << ": " << p.status();
    EXPECT_EQ(*p, c.expected) << c.entry;
  }
  for (const std::string bad :
       {"", ":5432", "db:0", "db:x", "[::1", "[::1]x", "[]", "a b", "h/x",
        "h,i", "db:5432:1", "[db.internal]", "fe80::1%eth0"}) {
    EXPECT_FALSE(ParseHostPattern(bad).ok()) << bad;
  }
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
           {"[pool]\npool_size = 0\n", "pool.pool_size"},
           {"[pool]\nmax_overflow = -1\n", "pool.max_overflow"},
           {"[pool]\nmax_overflow = 1025\n", "pool.max_overflow"},
           {"[pool]\nmin_idle = -1\n", "pool.min_idle"},
           {"[pool]\nrecycle = 0\n", "pool.recycle"},
           {"[pool]\npool_recycle = -5\n", "pool.pool_recycle"},
           {"[pool]\npre_ping = 1\n", "pool.pre_ping"},
           {"[pool]\nidle_timeout = 0\n", "pool.idle_timeout"},
           {"[pool]\nmax_waiting = 65537\n", "pool.max_waiting"},
           {"[pool]\nconnect_timeout = 0\n", "pool.connect_timeout"},
           {"[pool]\nacquire_timeout = true\n", "pool.acquire_timeout"},
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

TEST_F(BrokerSettingsTest, AccessIsClosedByDefault) {
  absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(Write(""));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->access.socket_group, "");
  EXPECT_FALSE(s->access.insecure_loopback);
  EXPECT_FALSE(s->access.tls());
  EXPECT_FALSE(s->access.tls_require_client_cert);
  EXPECT_TRUE(s->access.token_files.empty());
}

TEST_F(BrokerSettingsTest, ReadsAccessKeys) {
  absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(Write(R"(
[broker]
socket_group = "connbroker"
insecure_loopback = true
[tls]
cert_file = "/etc/connbroker/server.pem"
key_file = "/etc/connbroker/server.key"
client_ca_file = "/etc/connbroker/clients.pem"
require_client_cert = true
[auth]
token_files = ["/t/0", "/t/1", "/t/2", "/t/3", "/t/4", "/t/5", "/t/6",
               "/t/7", "/t/8", "/t/9", "/t/10"]
)"));
  ASSERT_TRUE(s.ok()) << s.status();
  const AccessSettings& a = s->access;
  EXPECT_EQ(a.socket_group, "connbroker");
  EXPECT_TRUE(a.insecure_loopback);
  EXPECT_TRUE(a.tls());
  EXPECT_EQ(a.tls_cert_file, "/etc/connbroker/server.pem");
  EXPECT_EQ(a.tls_key_file, "/etc/connbroker/server.key");
  EXPECT_EQ(a.tls_client_ca_file, "/etc/connbroker/clients.pem");
  EXPECT_TRUE(a.tls_require_client_cert);
  // Numeric order, not "10" after "1".
  ASSERT_EQ(a.token_files.size(), 11u);
  EXPECT_EQ(a.token_files[2], "/t/2");
  EXPECT_EQ(a.token_files[10], "/t/10");
}

TEST_F(BrokerSettingsTest, OneTokenFileNeedsNoArray) {
  absl::StatusOr<BrokerSettings> s =
      LoadBrokerSettings(Write("[auth]\ntoken_files = \"/etc/t.toml\"\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(s->access.token_files, ElementsAre("/etc/t.toml"));
}

TEST_F(BrokerSettingsTest, AccessMistakesAreNamed) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[tls]\ncert_file = \"/a.pem\"\n", "tls.cert_file"},
      {"[tls]\nkey_file = \"/a.key\"\n", "tls.key_file"},
      {"[tls]\nclient_ca_file = \"/ca.pem\"\n", "tls.client_ca_file"},
      {"[tls]\ncert_file = \"/a\"\nkey_file = \"/b\"\n"
       "require_client_cert = true\n",
       "tls.require_client_cert"},
      {"[tls]\ncert_file = \"a.pem\"\nkey_file = \"/b\"\n", "tls.cert_file"},
      {"[tls]\ncert_file = \"/a\"\nkey_file = \"/b\"\nverify = true\n",
       "tls.verify"},
      {"[tls]\nrequire_client_cert = \"yes\"\n", "tls.require_client_cert"},
      {"[auth]\ntoken_files = [\"tokens/a.toml\"]\n", "auth.token_files"},
      {"[auth]\ntoken_files = [\"\"]\n", "auth.token_files"},
      {"[auth]\ntokens = [\"/a\"]\n", "auth.tokens"},
      {"[broker]\nsocket_group = \"\"\n", "broker.socket_group"},
      {"[broker]\nsocket_group = 100\n", "broker.socket_group"},
      {"[broker]\ninsecure_loopback = 1\n", "broker.insecure_loopback"},
  };
  for (const auto& [text, key] : cases) {
    absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(Write(text));
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(key)) << text;
  }
}

TEST_F(BrokerSettingsTest, TransactionIdleTimeoutsDefaultAndPerSection) {
  absl::StatusOr<BrokerSettings> defaults = LoadBrokerSettings(Write(""));
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->IdleInTransactionTimeout("any"), absl::Seconds(60));
  EXPECT_EQ(defaults->limits.max_sessions, 1024);
  EXPECT_EQ(defaults->limits.max_pipelined_requests, 64);

  absl::StatusOr<BrokerSettings> s = LoadBrokerSettings(Write(R"(
[transactions]
idle_timeout = "2m"
[transactions.analytics]
idle_timeout = 5
[limits]
max_sessions = 10
max_pipelined_requests = 8
)"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->IdleInTransactionTimeout("analytics"), absl::Seconds(5));
  EXPECT_EQ(s->IdleInTransactionTimeout("other"), absl::Minutes(2));
  EXPECT_EQ(s->limits.max_sessions, 10);
  EXPECT_EQ(s->limits.max_pipelined_requests, 8);
}

TEST_F(BrokerSettingsTest, TransactionMistakesAreNamed) {
  absl::StatusOr<BrokerSettings> zero =
      LoadBrokerSettings(Write("[transactions]\nidle_timeout = 0\n"));
  ASSERT_FALSE(zero.ok());
  EXPECT_THAT(zero.status().message(), HasSubstr("transactions.idle_timeout"));
  EXPECT_THAT(zero.status().message(), HasSubstr("between 1s and 24h"));
  absl::StatusOr<BrokerSettings> unknown =
      LoadBrokerSettings(Write("[transactions]\nidle = \"1m\"\n"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("transactions.idle"));
  absl::StatusOr<BrokerSettings> pipelined =
      LoadBrokerSettings(Write("[limits]\nmax_pipelined_requests = 0\n"));
  EXPECT_FALSE(pipelined.ok());
}

}  // namespace
}  // namespace connbroker::config
