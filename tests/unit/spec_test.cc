// Tests of ResolveSpec: st.connection's name, type, params, scope and pools.
#include "connbroker/config/spec.h"

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace connbroker::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPassword[] = "Tr0ub4dor&3";

EnvLookup MapEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](
             const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

Secrets TestSecrets() {
  return Secrets::FromSections(
      {
          {"analytics",
           {{"type", std::string("sql")},
            {"dialect", std::string("postgresql")},
            {"driver", std::string("psycopg2")},
            {"username", std::string("app")},
            {"password", std::string(kPassword)},
            {"host", std::string("db.internal")},
            {"port", int64_t{5432}},
            {"database", std::string("sales")}}},
          {"sql", {{"url", std::string("sqlite:////srv/default.db")}}},
          {"local", {{"url", std::string("sqlite:///local.db")}}},
          {"typed_snow",
           {{"type", std::string("snowflake")},
            {"url", std::string("sqlite://")}}},
      },
      {"/home/u/.streamlit/secrets.toml", "/srv/app/.streamlit/secrets.toml"});
}

absl::StatusOr<ConnectionSpec> Resolve(
    const ConnectArgs& args, const Secrets& secrets = TestSecrets(),
    const EnvLookup& env = MapEnv({}),
    const BrokerSettings& settings = BrokerSettings{}) {
  return ResolveSpec(args, secrets, env, settings);
}

// Ad-hoc connections allowed to in-memory SQLite only (no dirs, no hosts).
BrokerSettings AdHocAllowed(std::vector<std::string> sqlite_dirs = {},
                            std::vector<std::string> hosts = {}) {
  BrokerSettings settings;
  settings.allow_ad_hoc = true;
  settings.ad_hoc_sqlite_dirs = std::move(sqlite_dirs);
  settings.ad_hoc_hosts = std::move(hosts);
  return settings;
}

void ExpectNoPassword(const absl::Status& status) {
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr(kPassword)));
}

TEST(ResolveSpecTest, TypeFromSection) {
  absl::StatusOr<ConnectionSpec> spec = Resolve({"analytics", "", {}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "analytics");
  EXPECT_EQ(spec->type, "sql");
  EXPECT_EQ(spec->scope, Scope::kGlobal);
  EXPECT_FALSE(spec->params.contains("type"));
  EXPECT_EQ(spec->sql.host, "db.internal");
  EXPECT_EQ(spec->sql.password, kPassword);
  EXPECT_EQ(spec->description,
            "postgresql+psycopg2://app:***@db.internal:5432/sales");
  EXPECT_THAT(spec->description, Not(HasSubstr(kPassword)));
  EXPECT_EQ(spec->pool, PoolSettings{});
}

TEST(ResolveSpecTest, TypeFromNameThatIsAType) {
  absl::StatusOr<ConnectionSpec> spec = Resolve({"sql", "", {}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->type, "sql");
  EXPECT_EQ(spec->description, "sqlite:////srv/default.db");
}

TEST(ResolveSpecTest, TypeFromRequestWinsOverSection) {
  // The section says snowflake; the request's type wins.
  absl::StatusOr<ConnectionSpec> spec = Resolve({"typed_snow", "sql", {}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->type, "sql");
  EXPECT_TRUE(spec->sql.IsSqliteMemory());
}

TEST(ResolveSpecTest, SectionTypeWinsOverName) {
  // The header's order: a section's `type` comes before the name's.
  Secrets secrets =
      Secrets::FromSections({{"sql", {{"type", std::string("snowpark")}}}});
  absl::StatusOr<ConnectionSpec> spec = Resolve({"sql", "", {}}, secrets);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kUnimplemented);
}

TEST(ResolveSpecTest, ClassPathAliasesMeanBuiltInTypes) {
  for (const std::string alias :
       {"sql", "streamlit.connections.SQLConnection",
        "streamlit.connections.sql_connection.SQLConnection"}) {
    absl::StatusOr<ConnectionSpec> spec = Resolve({"local", alias, {}});
    ASSERT_TRUE(spec.ok()) << alias << ": " << spec.status();
    EXPECT_EQ(spec->type, "sql");
  }
  const std::pair<const char*, const char*> snow[] = {
      {"snowflake", "snowflake"},
      {"snowflake-callers-rights", "snowflake-callers-rights"},
      {"snowpark", "snowpark"},
      {"streamlit.connections.SnowflakeConnection", "snowflake"},
      {"streamlit.connections.SnowflakeCallersRightsConnection",
       "snowflake-callers-rights"},
      {"streamlit.connections.SnowparkConnection", "snowpark"},
      {"streamlit.connections.snowflake_connection.SnowflakeConnection",
       "snowflake"},
  };
  for (const auto& [alias, canonical] : snow) {
    absl::StatusOr<std::string> type = CanonicalType(alias);
    ASSERT_TRUE(type.ok()) << alias;
    EXPECT_EQ(*type, canonical);
  }
}

TEST(ResolveSpecTest, KnownTypesSorted) {
  EXPECT_THAT(KnownTypes(), ElementsAre("snowflake", "snowflake-callers-rights",
                                        "snowpark", "sql"));
}

TEST(ResolveSpecTest, SnowflakeTypesAreUnimplementedNamingTheLibrary) {
  for (const std::string type :
       {"snowflake", "snowflake-callers-rights", "snowpark",
        "streamlit.connections.SnowflakeConnection"}) {
    absl::StatusOr<ConnectionSpec> spec = Resolve({"analytics", type, {}});
    ASSERT_FALSE(spec.ok()) << type;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kUnimplemented);
    const std::string message(spec.status().message());
    EXPECT_THAT(message, HasSubstr("needs the Snowflake backend"));
    EXPECT_THAT(message, HasSubstr("snowflake-connector-python"));
    EXPECT_THAT(message, HasSubstr("this connbroker build has the sql type"));
    ExpectNoPassword(spec.status());
  }
  // Also when inferred from the name or the section.
  EXPECT_EQ(Resolve({"snowflake", "", {}}).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(Resolve({"snowpark", "", {}}).status().code(),
            absl::StatusCode::kUnimplemented);
  absl::StatusOr<ConnectionSpec> typed = Resolve({"typed_snow", "", {}});
  EXPECT_EQ(typed.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(typed.status().message()),
              HasSubstr("connection type 'snowflake'"));
}

TEST(ResolveSpecTest, UnknownTypeListsKnownOnes) {
  absl::StatusOr<ConnectionSpec> spec = Resolve({"analytics", "foo", {}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(spec.status().message());
  EXPECT_THAT(message, HasSubstr("unknown connection type 'foo'"));
  EXPECT_THAT(message, HasSubstr("known types: snowflake, "
                                 "snowflake-callers-rights, snowpark, sql"));
  EXPECT_THAT(message, HasSubstr("streamlit.connections.SQLConnection"));
  ExpectNoPassword(spec.status());
}

TEST(ResolveSpecTest, PluginTypesAreUnimplemented) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"analytics", "plugin:/usr/lib/libx.so", {}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(spec.status().message()),
              HasSubstr("connection type plugins (plugin:...) are not "
                        "supported by this build"));
}

TEST(ResolveSpecTest, NoTypeWithSectionIsFailedPrecondition) {
  absl::StatusOr<ConnectionSpec> spec = Resolve({"local", "", {}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(spec.status().message());
  EXPECT_THAT(message, HasSubstr("connection 'local' has no type"));
  EXPECT_THAT(message, HasSubstr("pass type=..."));
  EXPECT_THAT(message, HasSubstr("set type = \"...\" in [connections.local]"));
  EXPECT_THAT(
      message,
      HasSubstr("use a name that is a type (sql, snowflake, snowpark)"));
}

TEST(ResolveSpecTest, NoTypeWithoutSectionIsNotFoundListingNames) {
  absl::StatusOr<ConnectionSpec> spec = Resolve({"nosuch", "", {}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  const std::string message(spec.status().message());
  EXPECT_THAT(message, HasSubstr("no connection named 'nosuch'"));
  EXPECT_THAT(message, HasSubstr("no [connections.nosuch] section in "
                                 "/home/u/.streamlit/secrets.toml, "
                                 "/srv/app/.streamlit/secrets.toml"));
  EXPECT_THAT(message, HasSubstr("configured: analytics, local, sql, "
                                 "typed_snow"));
}

TEST(ResolveSpecTest, NotFoundWithNoSecretsAtAll) {
  absl::StatusOr<ConnectionSpec> spec = Resolve({"nosuch", "", {}}, Secrets());
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  const std::string message(spec.status().message());
  EXPECT_THAT(message, HasSubstr("no secrets file found"));
  EXPECT_THAT(message, HasSubstr("configured: none"));
}

TEST(ResolveSpecTest, SqlWithNothingToConnectToIsNotFound) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"warehouse", "sql", {{"query.mode", std::string("ro")}}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(spec.status().message()),
              HasSubstr("no connection named 'warehouse'"));
  EXPECT_THAT(std::string(spec.status().message()),
              HasSubstr("configured: analytics, local"));
}

TEST(ResolveSpecTest, SqlKwargsAloneAreEnoughWhenAdHocIsAllowed) {
  testing::TempDir dir;
  const std::string db = dir.Path("x.db");
  absl::StatusOr<ConnectionSpec> spec = Resolve(
      {"adhoc", "sql", {{"dialect", std::string("sqlite")}, {"database", db}}},
      TestSecrets(), MapEnv({}), AdHocAllowed({dir.path()}));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->description, "sqlite:///" + db);
}

TEST(ResolveSpecTest, SqlSectionMissingPartIsInvalidArgument) {
  Secrets secrets =
      Secrets::FromSections({{"pg",
                              {{"type", std::string("sql")},
                               {"dialect", std::string("postgresql")},
                               {"password", std::string(kPassword)},
                               {"database", std::string("d")}}}});
  absl::StatusOr<ConnectionSpec> spec = Resolve({"pg", "", {}}, secrets);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()),
              HasSubstr("sql connection 'pg' needs 'host'"));
  ExpectNoPassword(spec.status());

  Secrets no_dialect = Secrets::FromSections(
      {{"pg", {{"type", std::string("sql")}, {"host", std::string("h")}}}});
  spec = Resolve({"pg", "", {}}, no_dialect);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()),
              HasSubstr("sql connection 'pg' needs 'dialect' (or a 'url')"));
}

TEST(ResolveSpecTest, KwargsOverrideSectionKeyByKeyWhereAllowed) {
  Secrets secrets = Secrets::FromSections(
      {{"analytics",
        {{"type", std::string("sql")},
         {"dialect", std::string("postgresql")},
         {"driver", std::string("psycopg2")},
         {"username", std::string("app")},
         {"password", std::string(kPassword)},
         {"host", std::string("db.internal")},
         {"port", int64_t{5432}},
         {"database", std::string("sales")},
         {"allow_client_kwargs.0", std::string("host")},
         {"allow_client_kwargs.1", std::string("query")}}}});
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"analytics",
               "",
               {{"host", std::string("replica")},
                {"query.sslmode", std::string("require")}}},
              secrets);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->sql.host, "replica");
  EXPECT_EQ(spec->sql.username, "app");  // kept from the section
  EXPECT_EQ(spec->sql.port, 5432);
  EXPECT_EQ(spec->params.at("host"), Value{std::string("replica")});
  EXPECT_EQ(spec->params.at("database"), Value{std::string("sales")});
  // The policy is not a connection parameter.
  EXPECT_FALSE(spec->params.contains("allow_client_kwargs.0"));
  EXPECT_EQ(spec->description,
            "postgresql+psycopg2://app:***@replica:5432/sales?sslmode=require");
}

BrokerSettings EnvNamesAllowed(std::vector<std::string> names) {
  BrokerSettings settings;
  settings.env_names = std::move(names);
  return settings;
}

TEST(ResolveSpecTest, EnvName) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"env:DB_CONN", "", {}}, TestSecrets(),
              MapEnv({{"DB_CONN", "analytics"}}), EnvNamesAllowed({"DB_*"}));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "analytics");
  EXPECT_EQ(spec->type, "sql");
}

TEST(ResolveSpecTest, EnvNamesAreRefusedUnlessListed) {
  for (const std::vector<std::string>& listed :
       std::vector<std::vector<std::string>>{{}, {"OTHER"}, {"DB_CONN_X"}}) {
    absl::StatusOr<ConnectionSpec> spec =
        Resolve({"env:DB_CONN", "", {}}, TestSecrets(),
                MapEnv({{"DB_CONN", "analytics"}}), EnvNamesAllowed(listed));
    ASSERT_FALSE(spec.ok());
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(std::string(spec.status().message()), HasSubstr("env_names"));
    EXPECT_THAT(std::string(spec.status().message()),
                Not(HasSubstr("analytics")));
  }
}

// Defect 2 of issue 11: any client could read the daemon's environment,
// since NOT_FOUND quoted the variable's value as the unknown name.
TEST(ResolveSpecTest, EnvValueThatIsNoSectionIsNeverEchoed) {
  for (const BrokerSettings& settings :
       {EnvNamesAllowed({"HOME"}), EnvNamesAllowed({"*"})}) {
    absl::StatusOr<ConnectionSpec> spec =
        Resolve({"env:HOME", "", {}}, TestSecrets(),
                MapEnv({{"HOME", "/root/very-private-value"}}), settings);
    ASSERT_FALSE(spec.ok());
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(std::string(spec.status().message()),
                Not(HasSubstr("very-private")));
    EXPECT_THAT(std::string(spec.status().message()), HasSubstr("env:HOME"));
  }
}

TEST(ResolveSpecTest, LongNamesAreRefusedAndCutInTheMessage) {
  const std::string name(1 << 20, 'n');
  absl::StatusOr<ConnectionSpec> spec = Resolve({name, "", {}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(spec.status().message().size(), 300u);
  spec = Resolve({"analytics", std::string(100000, 't'), {}});
  ASSERT_FALSE(spec.ok());
  EXPECT_LT(spec.status().message().size(), 300u);
}

// Defect 1 of issue 11: a kwarg the daemon ignores made a new connection for
// every distinct value.
TEST(ResolveSpecTest, IgnoredKwargsDoNotMakeDistinctConnections) {
  absl::StatusOr<ConnectionSpec> plain = Resolve({"local", "sql", {}});
  ASSERT_TRUE(plain.ok()) << plain.status();
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ConnectionSpec> echo = Resolve(
        {"local",
         "sql",
         {{"create_engine_kwargs.echo", int64_t{i}},
          {"create_engine_kwargs.connect_args.check_same_thread", false},
          {"some_unknown_key", std::string(100000, 'x')}}});
    ASSERT_TRUE(echo.ok()) << echo.status();
    EXPECT_EQ(echo->CanonicalKey(), plain->CanonicalKey());
  }
  // A kwarg the pool reads still makes a connection of its own.
  absl::StatusOr<ConnectionSpec> sized = Resolve(
      {"local", "sql", {{"create_engine_kwargs.pool_size", int64_t{2}}}});
  ASSERT_TRUE(sized.ok()) << sized.status();
  EXPECT_NE(sized->CanonicalKey(), plain->CanonicalKey());
}

TEST(ResolveSpecTest, EnvNameUnsetIsFailedPreconditionNamingVar) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"env:MISSING_VAR", "", {}}, TestSecrets(),
              MapEnv({{"OTHER", "analytics"}}), EnvNamesAllowed({"*"}));
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("MISSING_VAR"));
}

TEST(ResolveSpecTest, Scope) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"local", "sql", {{"scope", std::string("session")}}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->scope, Scope::kSession);
  EXPECT_FALSE(spec->params.contains("scope"));
  EXPECT_STREQ(ScopeName(spec->scope), "session");
  EXPECT_STREQ(ScopeName(Scope::kGlobal), "global");

  spec = Resolve({"local", "sql", {{"scope", std::string("galaxy")}}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("scope"));
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("galaxy"));
}

TEST(ResolveSpecTest, CreateEngineKwargsMapToPool) {
  BrokerSettings settings;
  settings.pool.pool_size = 7;
  settings.pool.idle_timeout = absl::Minutes(3);
  absl::StatusOr<ConnectionSpec> spec = Resolve(
      {"local",
       "sql",
       {{"create_engine_kwargs.pool_size", int64_t{2}},
        {"create_engine_kwargs.max_overflow", int64_t{0}},
        {"create_engine_kwargs.pool_timeout", std::string("1m")},
        {"create_engine_kwargs.pool_recycle", int64_t{3600}},
        {"create_engine_kwargs.pool_pre_ping", true},
        {"create_engine_kwargs.connect_args.timeout", 2.5},
        {"create_engine_kwargs.connect_args.connect_timeout", int64_t{4}},
        {"create_engine_kwargs.min_idle", int64_t{1}},
        {"create_engine_kwargs.max_waiting", int64_t{0}},
        {"create_engine_kwargs.echo", true}}},
      TestSecrets(), MapEnv({}), settings);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pool.pool_size, 2);
  EXPECT_EQ(spec->pool.max_overflow, 0);
  EXPECT_EQ(spec->pool.acquire_timeout, absl::Minutes(1));
  EXPECT_EQ(spec->pool.recycle, absl::Hours(1));
  EXPECT_TRUE(spec->pool.pre_ping);
  EXPECT_EQ(spec->pool.busy_timeout, absl::Milliseconds(2500));
  EXPECT_EQ(spec->pool.connect_timeout, absl::Seconds(4));
  EXPECT_EQ(spec->pool.min_idle, 1);
  EXPECT_EQ(spec->pool.max_waiting, 0);
  EXPECT_EQ(spec->pool.idle_timeout, absl::Minutes(3));  // the default

  spec = Resolve({"local", "sql", {}}, TestSecrets(), MapEnv({}), settings);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->pool, settings.pool);
}

TEST(ResolveSpecTest, PoolRecycleMinusOneMeansNever) {
  BrokerSettings settings;
  settings.pool.recycle = absl::Minutes(5);
  for (const Value& never : {Value{int64_t{-1}}, Value{-1.0}}) {
    absl::StatusOr<ConnectionSpec> spec = Resolve(
        {"local", "sql", {{"create_engine_kwargs.pool_recycle", never}}},
        TestSecrets(), MapEnv({}), settings);
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(spec->pool.recycle, absl::InfiniteDuration());
  }
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"local",
               "sql",
               {{"create_engine_kwargs.idle_timeout", std::string("2h")}}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pool.idle_timeout, absl::Hours(2));
}

TEST(ResolveSpecTest, MinIdleFollowsASmallerPoolSize) {
  BrokerSettings settings;
  settings.pool.pool_size = 8;
  settings.pool.min_idle = 4;
  absl::StatusOr<ConnectionSpec> spec = Resolve(
      {"local", "sql", {{"create_engine_kwargs.pool_size", int64_t{2}}}},
      TestSecrets(), MapEnv({}), settings);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pool.min_idle, 2);

  // Given explicitly, it must fit.
  spec = Resolve({"local",
                  "sql",
                  {{"create_engine_kwargs.pool_size", int64_t{2}},
                   {"create_engine_kwargs.min_idle", int64_t{3}}}},
                 TestSecrets(), MapEnv({}), settings);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()),
              HasSubstr("create_engine_kwargs.min_idle must be an integer "
                        "from 0 to pool_size (2)"));
}

TEST(ResolveSpecTest, BadCreateEngineKwargsAreInvalid) {
  struct Case {
    std::string key;
    Value value;
    std::string range;
  };
  const Case cases[] = {
      {"pool_size", int64_t{0}, "an integer from 1 to 1024"},
      {"pool_size", int64_t{1025}, "an integer from 1 to 1024"},
      {"pool_size", std::string("many"), "an integer from 1 to 1024"},
      {"max_overflow", int64_t{-1}, "needs a bound"},
      {"max_overflow", int64_t{-2}, "an integer from 0 to 1024"},
      {"max_overflow", int64_t{1025}, "an integer from 0 to 1024"},
      {"pool_timeout", int64_t{-1}, "must not be negative"},
      {"pool_recycle", int64_t{0}, "-1 (never) or a duration of at least 1"},
      {"pool_recycle", int64_t{-2}, "must not be negative"},
      {"pool_pre_ping", std::string("yes"), "true or false"},
      {"connect_args.timeout", std::string("soon"), "not a duration"},
      {"connect_args.connect_timeout", int64_t{0}, "a positive duration"},
      {"min_idle", int64_t{-1}, "an integer from 0 to 1024"},
      {"idle_timeout", int64_t{0}, "a duration of at least 1 second"},
      {"max_waiting", int64_t{-1}, "an integer from 0 to 65536"},
      {"max_waiting", int64_t{65537}, "an integer from 0 to 65536"},
  };
  for (const Case& c : cases) {
    const std::string key = "create_engine_kwargs." + c.key;
    absl::StatusOr<ConnectionSpec> spec =
        Resolve({"local", "sql", {{key, c.value}}});
    ASSERT_FALSE(spec.ok()) << key << " = " << ValueToString(c.value);
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(spec.status().message());
    EXPECT_THAT(message, HasSubstr("connection 'local': " + key));
    EXPECT_THAT(message, HasSubstr(c.range))
        << key << " = " << ValueToString(c.value);
  }
}

// --- Who decides where a configured connection points. ---

struct Override {
  std::string key;
  Value value;
  std::string value_text;  // what must not appear in the message
};

TEST(RedirectPolicyTest, ClientMayNotRedirectASection) {
  const Override overrides[] = {
      {"url", std::string("postgresql://u:S3cretUrlPw@evil.example/x"),
       "evil.example"},
      {"dialect", std::string("mysql"), "mysql"},
      {"driver", std::string("asyncpgXYZ"), "asyncpgXYZ"},
      {"host", std::string("evil.example"), "evil.example"},
      {"port", int64_t{6543}, "6543"},
      {"database", std::string("payroll_db"), "payroll_db"},
      {"username", std::string("superuser_x"), "superuser_x"},
      {"password", std::string("An0therPassw0rd"), "An0therPassw0rd"},
      {"query.sslmode", std::string("disable_xyz"), "disable_xyz"},
      {"query.host", std::string("/tmp/evil-socket"), "/tmp/evil-socket"},
      {"query", std::string("whatever_q"), "whatever_q"},
  };
  for (const Override& o : overrides) {
    absl::StatusOr<ConnectionSpec> spec =
        Resolve({"analytics", "", {{o.key, o.value}}});
    ASSERT_FALSE(spec.ok()) << o.key;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied)
        << o.key;
    const std::string message(spec.status().message());
    EXPECT_EQ(message,
              "connection 'analytics': a client may not set '" + o.key +
                  "' (the [connections.analytics] section decides where it "
                  "points; list the key in its allow_client_kwargs to allow "
                  "it)");
    EXPECT_THAT(message, Not(HasSubstr(o.value_text)));
    ExpectNoPassword(spec.status());
  }
}

TEST(RedirectPolicyTest, UrlAgainstPartsAndPartsAgainstUrl) {
  // The section is written as parts: a client's url is refused even when it
  // says the same thing.
  absl::StatusOr<ConnectionSpec> spec = Resolve(
      {"analytics",
       "",
       {{"url", std::string("postgresql+psycopg2://app@db.internal:5432/"
                            "sales")}}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(spec.status().message()),
              HasSubstr("may not set 'url'"));

  // The section has a url: parts from the client are refused.
  for (const std::string key : {"database", "host", "dialect"}) {
    spec = Resolve({"local", "sql", {{key, std::string("other")}}});
    ASSERT_FALSE(spec.ok()) << key;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(std::string(spec.status().message()),
                HasSubstr("may not set '" + key + "'"));
  }
}

TEST(RedirectPolicyTest, TheSectionsOwnValueIsAccepted) {
  absl::StatusOr<ConnectionSpec> plain = Resolve({"analytics", "", {}});
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"analytics",
               "sql",
               {{"dialect", std::string("postgresql")},
                {"driver", std::string("psycopg2")},
                {"host", std::string("db.internal")},
                {"port", int64_t{5432}},
                {"database", std::string("sales")},
                {"username", std::string("app")},
                {"password", std::string(kPassword)}}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(spec->CanonicalKey(), plain->CanonicalKey());

  spec =
      Resolve({"local", "sql", {{"url", std::string("sqlite:///local.db")}}});
  EXPECT_TRUE(spec.ok()) << spec.status();

  // Same text, different kind: a change all the same.
  spec = Resolve({"analytics", "", {{"port", std::string("5432")}}});
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
}

TEST(RedirectPolicyTest, TuningKwargsStayAllowed) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"analytics",
               "streamlit.connections.SQLConnection",
               {{"scope", std::string("session")},
                {"create_engine_kwargs.pool_size", int64_t{3}},
                {"create_engine_kwargs.connect_args.check_same_thread", false},
                {"create_engine_kwargs.echo", true}}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->scope, Scope::kSession);
  EXPECT_EQ(spec->pool.pool_size, 3);
  EXPECT_EQ(spec->sql.host, "db.internal");
}

Secrets SectionAllowing(const std::vector<std::string>& keys) {
  Params section = {
      {"type", std::string("sql")},
      {"url", std::string("postgresql://app:" + std::string(kPassword) +
                          "@db.internal/sales")}};
  for (size_t i = 0; i < keys.size(); ++i) {
    section["allow_client_kwargs." + std::to_string(i)] = keys[i];
  }
  return Secrets::FromSections({{"db", section}});
}

TEST(RedirectPolicyTest, AllowClientKwargsListsWhatClientsMaySet) {
  const Secrets secrets = SectionAllowing({"database", "query.sslmode"});
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"db",
               "",
               {{"database", std::string("sales_eu")},
                {"query.sslmode", std::string("require")}}},
              secrets);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->sql.database, "sales_eu");
  EXPECT_EQ(spec->sql.host, "db.internal");
  EXPECT_EQ(spec->sql.query.at("sslmode"), "require");

  // Only what is listed.
  for (const std::string key : {"host", "query.host", "username", "url"}) {
    spec = Resolve({"db", "", {{key, std::string("x")}}}, secrets);
    ASSERT_FALSE(spec.ok()) << key;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_THAT(
        std::string(spec.status().message()),
        HasSubstr("connection 'db': a client may not set '" + key + "'"));
  }

  // "query" allows every query option; a single string is a one-key list.
  Secrets query = Secrets::FromSections(
      {{"db",
        {{"type", std::string("sql")},
         {"url", std::string("postgresql://h/d")},
         {"allow_client_kwargs", std::string("query")}}}});
  spec = Resolve({"db",
                  "",
                  {{"query.application_name", std::string("a")},
                   {"query.sslmode", std::string("verify-full")}}},
                 query);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->sql.query.size(), 2u);
}

TEST(RedirectPolicyTest, SectionOnlyKeysAreNeverTakenFromClients) {
  // Even when the section lists them, and even with the section's value.
  Secrets secrets =
      Secrets::FromSections({{"files",
                              {{"type", std::string("sql")},
                               {"url", std::string("sqlite:///f.db")},
                               {"allow_attach", true}}}});
  const Params attempts[] = {
      {{"allow_attach", true}},
      {{"allow_attach", false}},
      {{"allow_client_kwargs", std::string("host")}},
      {{"allow_client_kwargs.0", std::string("url")}},
  };
  for (const Params& kwargs : attempts) {
    const std::string key = kwargs.begin()->first;
    // A section with allow_attach (files) and one without (local).
    for (const auto& [name, where] :
         {std::pair<std::string, Secrets>{"files", secrets},
          std::pair<std::string, Secrets>{"local", TestSecrets()}}) {
      absl::StatusOr<ConnectionSpec> spec =
          Resolve({name, "sql", kwargs}, where);
      ASSERT_FALSE(spec.ok()) << name << " " << key;
      EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
      EXPECT_THAT(std::string(spec.status().message()),
                  HasSubstr("a client may not set '" + key + "'"));
    }
    // And for an ad-hoc connection, allowed or not.
    Params adhoc = kwargs;
    adhoc["url"] = std::string("sqlite://");
    absl::StatusOr<ConnectionSpec> spec =
        Resolve({"adhoc", "sql", adhoc}, secrets, MapEnv({}), AdHocAllowed());
    ASSERT_FALSE(spec.ok()) << key;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
  }
  // From the section, allow_attach stays a param (the SQLite driver reads
  // it).
  absl::StatusOr<ConnectionSpec> spec = Resolve({"files", "", {}}, secrets);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->params.at("allow_attach"), Value{true});
}

TEST(RedirectPolicyTest, BadAllowClientKwargsIsAConfigurationError) {
  for (const std::string listed :
       {"allow_attach", "allow_client_kwargs", "scope", "databse", "query."}) {
    absl::StatusOr<ConnectionSpec> spec =
        Resolve({"db", "", {}}, SectionAllowing({listed}));
    ASSERT_FALSE(spec.ok()) << listed;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kFailedPrecondition);
    const std::string message(spec.status().message());
    EXPECT_THAT(message, HasSubstr("allow_client_kwargs in [connections.db] "
                                   "lists '" +
                                   listed + "'"));
    EXPECT_THAT(message, HasSubstr("it may list url, dialect, driver, host, "
                                   "port, database, username, password, "
                                   "query"));
    ExpectNoPassword(spec.status());
  }
  Secrets not_text = Secrets::FromSections(
      {{"db",
        {{"url", std::string("sqlite://")}, {"allow_client_kwargs", true}}}});
  absl::StatusOr<ConnectionSpec> spec = Resolve({"db", "sql", {}}, not_text);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RedirectPolicyTest, KeysAreShortenedAndValuesNeverQuoted) {
  const std::string long_key = "query." + std::string(500, 'k');
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"analytics", "", {{long_key, std::string("v")}}});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_LT(spec.status().message().size(), 300u);
}

TEST(RedirectPolicyTest, EnvNamesAreNotEchoed) {
  absl::StatusOr<ConnectionSpec> spec = Resolve(
      {"env:DB_CONN", "", {{"host", std::string("evil")}}}, TestSecrets(),
      MapEnv({{"DB_CONN", "analytics"}}), EnvNamesAllowed({"DB_CONN"}));
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(spec.status().message()),
              HasSubstr("connection 'env:DB_CONN'"));
  EXPECT_THAT(std::string(spec.status().message()),
              Not(HasSubstr("analytics")));
}

// --- Ad-hoc connections: a name with no section. ---

TEST(AdHocTest, RefusedByDefault) {
  const Params targets[] = {
      {{"url", std::string("sqlite:////etc/passwd")}},
      {{"url", std::string("sqlite://")}},
      {{"dialect", std::string("postgresql")},
       {"host", std::string("h")},
       {"database", std::string("d")}},
  };
  for (const Params& kwargs : targets) {
    absl::StatusOr<ConnectionSpec> spec = Resolve({"x", "sql", kwargs});
    ASSERT_FALSE(spec.ok());
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
    const std::string message(spec.status().message());
    EXPECT_THAT(message,
                HasSubstr("connection 'x' has no [connections.x] section and "
                          "this daemon does not allow ad-hoc connections "
                          "(broker.toml: allow_ad_hoc = true"));
    EXPECT_THAT(message, HasSubstr("configured: analytics, local, sql"));
    EXPECT_THAT(message, Not(HasSubstr("/etc/passwd")));
  }
  // The first-party name "sql" without a section is no exception.
  Secrets none = Secrets::FromSections({{"other", {}}});
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"sql", "", {{"url", std::string("sqlite://")}}}, none);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
  // A name with nothing to connect to is still NOT_FOUND (a typo, not an
  // attempt).
  spec =
      Resolve({"x", "sql", {{"create_engine_kwargs.pool_size", int64_t{1}}}});
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
}

TEST(AdHocTest, InMemorySqliteIsAlwaysFine) {
  for (const std::string url : {"sqlite://", "sqlite:///:memory:"}) {
    absl::StatusOr<ConnectionSpec> spec =
        Resolve({"x", "sql", {{"url", url}}}, TestSecrets(), MapEnv({}),
                AdHocAllowed());
    ASSERT_TRUE(spec.ok()) << url << ": " << spec.status();
    EXPECT_TRUE(spec->sql.IsSqliteMemory());
  }
}

class AdHocSqliteTest : public ::testing::Test {
 protected:
  AdHocSqliteTest() {
    std::filesystem::create_directories(allowed());
    std::filesystem::create_directories(root_.Path("allowed2"));
    std::filesystem::create_directories(root_.Path("outside"));
  }

  std::string allowed() const { return root_.Path("allowed"); }
  std::string Path(const std::string& name) const { return root_.Path(name); }

  absl::StatusOr<ConnectionSpec> Open(const std::string& database) const {
    return Resolve(
        {"x",
         "sql",
         {{"dialect", std::string("sqlite")}, {"database", database}}},
        TestSecrets(), MapEnv({}), AdHocAllowed({allowed()}));
  }

  testing::TempDir root_;
};

TEST_F(AdHocSqliteTest, InsideAnAllowedDirectory) {
  for (const std::string& db :
       {allowed() + "/app.db", allowed() + "/sub/dir/app.db",
        allowed() + "/./app.db", allowed() + "/sub/../app.db",
        allowed() + "//app.db"}) {
    absl::StatusOr<ConnectionSpec> spec = Open(db);
    EXPECT_TRUE(spec.ok()) << db << ": " << spec.status();
  }
  // Through a URL as well.
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"x", "sql", {{"url", "sqlite:///" + allowed() + "/u.db"}}},
              TestSecrets(), MapEnv({}), AdHocAllowed({allowed() + "/"}));
  EXPECT_TRUE(spec.ok()) << spec.status();
}

TEST_F(AdHocSqliteTest, OutsideIsRefused) {
  std::filesystem::create_symlink(Path("outside"), allowed() + "/link");
  std::filesystem::create_symlink("/etc/passwd", allowed() + "/passwd.db");
  for (const std::string& db : std::vector<std::string>{
           Path("outside/x.db"), "/etc/passwd", allowed() + "/../outside/x.db",
           allowed() + "/sub/../../outside/x.db",
           allowed() + "/../allowed2/x.db",  // a sibling sharing the prefix
           allowed(),                        // the directory itself
           allowed() + "/link/x.db",         // a symlink leading out
           allowed() + "/passwd.db",
           "relative.db",  // the daemon's working directory is not allowed
       }) {
    absl::StatusOr<ConnectionSpec> spec = Open(db);
    ASSERT_FALSE(spec.ok()) << db;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied) << db;
    const std::string message(spec.status().message());
    EXPECT_THAT(message, HasSubstr("connection 'x': an ad-hoc SQLite database "
                                   "must lie inside one of the directories in "
                                   "broker.toml's [security] "
                                   "ad_hoc_sqlite_dirs"));
    EXPECT_THAT(message, Not(HasSubstr(db)));
  }
  // Nothing is allowed when no directory is listed.
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"x", "sql", {{"url", "sqlite:///" + allowed() + "/a.db"}}},
              TestSecrets(), MapEnv({}), AdHocAllowed());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(AdHocSqliteTest, RelativePathsResolveAgainstTheWorkingDirectory) {
  const std::string cwd = std::filesystem::current_path().string();
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"x", "sql", {{"url", std::string("sqlite:///some/rel.db")}}},
              TestSecrets(), MapEnv({}), AdHocAllowed({cwd}));
  EXPECT_TRUE(spec.ok()) << spec.status();
  spec = Resolve({"x", "sql", {{"url", std::string("sqlite:///../rel.db")}}},
                 TestSecrets(), MapEnv({}), AdHocAllowed({cwd}));
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(AdHocSqliteTest, UrisAndNulsAreRefused) {
  absl::StatusOr<ConnectionSpec> spec =
      Open("file:" + allowed() + "/x.db?mode=ro");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied);
  // SQLite would stop at the NUL and open /etc/passwd, while the check
  // would see a path inside the allowed directory.
  spec = Open(std::string("/etc/passwd\0/../..", 18) + allowed() + "/x.db");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("NUL"));
}

TEST(AdHocTest, NetworkHostsMustBeListed) {
  const BrokerSettings settings =
      AdHocAllowed({}, {"db.internal", "pg2:6432", "[::1]:5432",
                        "/run/postgresql", "/run/mysqld/mysqld.sock"});
  auto open = [&](const std::string& url) {
    return Resolve({"x", "sql", {{"url", url}}}, TestSecrets(), MapEnv({}),
                   settings);
  };
  for (const std::string url : {
           "postgresql://u:pw@db.internal/d",
           "postgresql+psycopg2://u:pw@DB.Internal:5433/d",
           "postgresql://u@pg2:6432/d",
           "postgresql://u@[::1]/d",
           "postgresql://u@[0:0:0:0:0:0:0:1]/d",
           "postgresql://u@/d?host=/run/postgresql",
           "postgresql://u@/d?host=/run/postgresql/",
           "postgresql://u@db.internal/d?sslmode=require&application_name=a",
           "mysql+pymysql://u:pw@db.internal/d?charset=utf8mb4",
           "mariadb://u@/d?unix_socket=/run/mysqld/mysqld.sock",
       }) {
    absl::StatusOr<ConnectionSpec> spec = open(url);
    EXPECT_TRUE(spec.ok()) << url << ": " << spec.status();
  }
  for (const std::string url : {
           "postgresql://u:pw@evil.example/d",
           "postgresql://u:pw@pg2/d",       // 5432, not the listed 6432
           "postgresql://u:pw@pg2:5432/d",  // idem
           "postgresql://u@[::1]:6000/d",
           "postgresql://u@db.internal,evil.example/d",
           "postgresql://u@/d?host=/tmp",
           "postgresql://u@db.internal/d?host=evil.example",
           "mysql://u@db.internal/d?unix_socket=/tmp/evil.sock",
           "mysql://u@127.0.0.1/d",
       }) {
    absl::StatusOr<ConnectionSpec> spec = open(url);
    ASSERT_FALSE(spec.ok()) << url;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied) << url;
    const std::string message(spec.status().message());
    EXPECT_THAT(message, HasSubstr("ad-hoc connections may reach only the "
                                   "hosts listed in broker.toml's [security] "
                                   "ad_hoc_hosts"))
        << url;
    EXPECT_THAT(message, Not(HasSubstr("evil")));
    EXPECT_THAT(message, Not(HasSubstr("pw@")));
  }
  // Options that redirect or read the daemon's files.
  for (const std::string url : {
           "postgresql://u@db.internal/d?hostaddr=10.9.9.9",
           "postgresql://u@db.internal/d?port=6000",
           "postgresql://u@db.internal/d?service=evil",
           "postgresql://u@db.internal/d?sslkey=/etc/ssl/private/k.pem",
           "postgresql://u@db.internal/d?passfile=/root/.pgpass",
           "mysql://u@db.internal/d?ssl_key=/etc/ssl/private/k.pem",
           "mysql://u@db.internal/d?read_default_file=/etc/evil.cnf",
       }) {
    absl::StatusOr<ConnectionSpec> spec = open(url);
    ASSERT_FALSE(spec.ok()) << url;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kPermissionDenied) << url;
    EXPECT_THAT(std::string(spec.status().message()),
                HasSubstr("may not set the query option"));
  }
}

TEST(CanonicalKeyTest, OrderIndependentAndValueSensitive) {
  Params a;
  a["url"] = std::string("sqlite://");
  a["password"] = std::string("p1");
  a["create_engine_kwargs.pool_size"] = int64_t{2};
  Params b;
  b["create_engine_kwargs.pool_size"] = int64_t{2};
  b["password"] = std::string("p1");
  b["url"] = std::string("sqlite://");
  absl::StatusOr<ConnectionSpec> sa =
      Resolve({"adhoc", "sql", a}, TestSecrets(), MapEnv({}), AdHocAllowed());
  absl::StatusOr<ConnectionSpec> sb =
      Resolve({"adhoc", "sql", b}, TestSecrets(), MapEnv({}), AdHocAllowed());
  ASSERT_TRUE(sa.ok() && sb.ok());
  EXPECT_EQ(sa->CanonicalKey(), sb->CanonicalKey());

  b["password"] = std::string("p2");
  absl::StatusOr<ConnectionSpec> sc =
      Resolve({"adhoc", "sql", b}, TestSecrets(), MapEnv({}), AdHocAllowed());
  ASSERT_TRUE(sc.ok());
  EXPECT_NE(sa->CanonicalKey(), sc->CanonicalKey());

  absl::StatusOr<ConnectionSpec> other_name =
      Resolve({"adhoc2", "sql", a}, TestSecrets(), MapEnv({}), AdHocAllowed());
  ASSERT_TRUE(other_name.ok());
  EXPECT_NE(sa->CanonicalKey(), other_name->CanonicalKey());

  // The alias and the canonical type give the same key.
  absl::StatusOr<ConnectionSpec> alias =
      Resolve({"adhoc", "streamlit.connections.SQLConnection", a},
              TestSecrets(), MapEnv({}), AdHocAllowed());
  ASSERT_TRUE(alias.ok());
  EXPECT_EQ(sa->CanonicalKey(), alias->CanonicalKey());

  // type given as a kwarg or as the request's type: the same connection.
  Params with_type = a;
  with_type["type"] = std::string("sql");
  absl::StatusOr<ConnectionSpec> typed = Resolve(
      {"adhoc", "", with_type}, TestSecrets(), MapEnv({}), AdHocAllowed());
  ASSERT_TRUE(typed.ok()) << typed.status();
  EXPECT_EQ(sa->CanonicalKey(), typed->CanonicalKey());
}

TEST(CanonicalKeyTest, SectionAndKwargsGiveTheSameKeyForTheSameParams) {
  absl::StatusOr<ConnectionSpec> from_section = Resolve({"local", "sql", {}});
  absl::StatusOr<ConnectionSpec> from_kwargs =
      Resolve({"local", "sql", {{"url", std::string("sqlite:///local.db")}}});
  ASSERT_TRUE(from_section.ok() && from_kwargs.ok());
  EXPECT_EQ(from_section->CanonicalKey(), from_kwargs->CanonicalKey());

  Secrets open =
      Secrets::FromSections({{"local",
                              {{"url", std::string("sqlite:///local.db")},
                               {"allow_client_kwargs", std::string("url")}}}});
  from_section = Resolve({"local", "sql", {}}, open);
  absl::StatusOr<ConnectionSpec> different = Resolve(
      {"local", "sql", {{"url", std::string("sqlite:///other.db")}}}, open);
  ASSERT_TRUE(from_section.ok() && different.ok());
  EXPECT_NE(from_section->CanonicalKey(), different->CanonicalKey());
}

}  // namespace
}  // namespace connbroker::config
