// Tests of ResolveSpec: st.connection's name, type, params, scope and pools.
#include "connbroker/config/spec.h"

#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

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
          {"typed_snow", {{"type", std::string("snowflake")}}},
      },
      {"/home/u/.streamlit/secrets.toml", "/srv/app/.streamlit/secrets.toml"});
}

absl::StatusOr<ConnectionSpec> Resolve(const ConnectArgs& args,
                                       const Secrets& secrets = TestSecrets(),
                                       const EnvLookup& env = MapEnv({})) {
  return ResolveSpec(args, secrets, env, PoolSettings{});
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
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"typed_snow", "sql", {{"url", std::string("sqlite://")}}});
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

TEST(ResolveSpecTest, SqlKwargsAloneAreEnough) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"adhoc",
               "sql",
               {{"dialect", std::string("sqlite")},
                {"database", std::string("/tmp/x.db")}}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->description, "sqlite:////tmp/x.db");
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

TEST(ResolveSpecTest, KwargsOverrideSectionKeyByKey) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"analytics",
               "",
               {{"host", std::string("replica")},
                {"query.sslmode", std::string("require")}}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->sql.host, "replica");
  EXPECT_EQ(spec->sql.username, "app");  // kept from the section
  EXPECT_EQ(spec->sql.port, 5432);
  EXPECT_EQ(spec->params.at("host"), Value{std::string("replica")});
  EXPECT_EQ(spec->params.at("database"), Value{std::string("sales")});
  EXPECT_EQ(spec->description,
            "postgresql+psycopg2://app:***@replica:5432/sales?sslmode=require");
}

TEST(ResolveSpecTest, EnvName) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"env:DB_CONN", "", {}}, TestSecrets(),
              MapEnv({{"DB_CONN", "analytics"}}));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "analytics");
  EXPECT_EQ(spec->type, "sql");
}

TEST(ResolveSpecTest, EnvNameUnsetIsFailedPreconditionNamingVar) {
  absl::StatusOr<ConnectionSpec> spec =
      Resolve({"env:MISSING_VAR", "", {}}, TestSecrets(),
              MapEnv({{"OTHER", "analytics"}}));
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
  PoolSettings defaults;
  defaults.pool_size = 7;
  defaults.idle_timeout = absl::Minutes(3);
  absl::StatusOr<ConnectionSpec> spec =
      ResolveSpec({"local",
                   "sql",
                   {{"create_engine_kwargs.pool_size", int64_t{2}},
                    {"create_engine_kwargs.pool_timeout", std::string("1m")},
                    {"create_engine_kwargs.connect_args.timeout", 2.5},
                    {"create_engine_kwargs.echo", true}}},
                  TestSecrets(), MapEnv({}), defaults);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pool.pool_size, 2);
  EXPECT_EQ(spec->pool.acquire_timeout, absl::Minutes(1));
  EXPECT_EQ(spec->pool.busy_timeout, absl::Milliseconds(2500));
  EXPECT_EQ(spec->pool.idle_timeout, absl::Minutes(3));

  spec = ResolveSpec({"local", "sql", {}}, TestSecrets(), MapEnv({}), defaults);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->pool, defaults);
}

TEST(ResolveSpecTest, BadCreateEngineKwargsAreInvalid) {
  const Params bad[] = {
      {{"create_engine_kwargs.pool_size", int64_t{0}}},
      {{"create_engine_kwargs.pool_size", std::string("many")}},
      {{"create_engine_kwargs.pool_timeout", int64_t{-1}}},
      {{"create_engine_kwargs.connect_args.timeout", std::string("soon")}},
  };
  for (const Params& kwargs : bad) {
    absl::StatusOr<ConnectionSpec> spec = Resolve({"local", "sql", kwargs});
    ASSERT_FALSE(spec.ok()) << kwargs.begin()->first;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(spec.status().message()),
                HasSubstr(kwargs.begin()->first));
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
  absl::StatusOr<ConnectionSpec> sa = Resolve({"adhoc", "sql", a});
  absl::StatusOr<ConnectionSpec> sb = Resolve({"adhoc", "sql", b});
  ASSERT_TRUE(sa.ok() && sb.ok());
  EXPECT_EQ(sa->CanonicalKey(), sb->CanonicalKey());

  b["password"] = std::string("p2");
  absl::StatusOr<ConnectionSpec> sc = Resolve({"adhoc", "sql", b});
  ASSERT_TRUE(sc.ok());
  EXPECT_NE(sa->CanonicalKey(), sc->CanonicalKey());

  absl::StatusOr<ConnectionSpec> other_name = Resolve({"adhoc2", "sql", a});
  ASSERT_TRUE(other_name.ok());
  EXPECT_NE(sa->CanonicalKey(), other_name->CanonicalKey());

  // The alias and the canonical type give the same key.
  absl::StatusOr<ConnectionSpec> alias =
      Resolve({"adhoc", "streamlit.connections.SQLConnection", a});
  ASSERT_TRUE(alias.ok());
  EXPECT_EQ(sa->CanonicalKey(), alias->CanonicalKey());

  // type given as a kwarg or as the request's type: the same connection.
  Params with_type = a;
  with_type["type"] = std::string("sql");
  absl::StatusOr<ConnectionSpec> typed = Resolve({"adhoc", "", with_type});
  ASSERT_TRUE(typed.ok()) << typed.status();
  EXPECT_EQ(sa->CanonicalKey(), typed->CanonicalKey());
}

TEST(CanonicalKeyTest, SectionAndKwargsGiveTheSameKeyForTheSameParams) {
  absl::StatusOr<ConnectionSpec> from_section = Resolve({"local", "sql", {}});
  absl::StatusOr<ConnectionSpec> from_kwargs =
      Resolve({"local", "sql", {{"url", std::string("sqlite:///local.db")}}});
  ASSERT_TRUE(from_section.ok() && from_kwargs.ok());
  EXPECT_EQ(from_section->CanonicalKey(), from_kwargs->CanonicalKey());
  absl::StatusOr<ConnectionSpec> different =
      Resolve({"local", "sql", {{"url", std::string("sqlite:///other.db")}}});
  ASSERT_TRUE(different.ok());
  EXPECT_NE(from_section->CanonicalKey(), different->CanonicalKey());
}

}  // namespace
}  // namespace connbroker::config
