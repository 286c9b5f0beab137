// Tests of SQL targets: URL parsing, parts, and password-free descriptions.
#include "connbroker/config/sql_url.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace connbroker::config {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct UrlCase {
  std::string url;
  SqlTarget expected;
  std::string description;
};

SqlTarget Target(std::string dialect, std::string driver, std::string user,
                 std::string password, std::string host,
                 std::optional<int> port, std::string database,
                 std::map<std::string, std::string> query = {}) {
  SqlTarget t;
  t.dialect = std::move(dialect);
  t.driver = std::move(driver);
  t.username = std::move(user);
  t.password = std::move(password);
  t.host = std::move(host);
  t.port = port;
  t.database = std::move(database);
  t.query = std::move(query);
  return t;
}

class ParseSqlUrlTest : public ::testing::TestWithParam<UrlCase> {};

TEST_P(ParseSqlUrlTest, Parses) {
  const UrlCase& c = GetParam();
  absl::StatusOr<SqlTarget> t = ParseSqlUrl(c.url);
  ASSERT_TRUE(t.ok()) << c.url << ": " << t.status();
  EXPECT_EQ(t->dialect, c.expected.dialect);
  EXPECT_EQ(t->driver, c.expected.driver);
  EXPECT_EQ(t->username, c.expected.username);
  EXPECT_EQ(t->password, c.expected.password);
  EXPECT_EQ(t->host, c.expected.host);
  EXPECT_EQ(t->port, c.expected.port);
  EXPECT_EQ(t->database, c.expected.database);
  EXPECT_EQ(t->query, c.expected.query);
  EXPECT_EQ(t->Describe(), c.description);
  if (!c.expected.password.empty()) {
    EXPECT_THAT(t->Describe(), Not(HasSubstr(c.expected.password)));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Urls, ParseSqlUrlTest,
    ::testing::Values(
        UrlCase{"sqlite://", Target("sqlite", "", "", "", "", {}, ""),
                "sqlite://"},
        UrlCase{"sqlite:///:memory:",
                Target("sqlite", "", "", "", "", {}, ":memory:"), "sqlite://"},
        UrlCase{"sqlite:///rel/app.db",
                Target("sqlite", "", "", "", "", {}, "rel/app.db"),
                "sqlite:///rel/app.db"},
        UrlCase{"sqlite:////srv/app.db",
                Target("sqlite", "", "", "", "", {}, "/srv/app.db"),
                "sqlite:////srv/app.db"},
        UrlCase{"sqlite+pysqlite:///a.db?mode=ro",
                Target("sqlite", "pysqlite", "", "", "", {}, "a.db",
                       {{"mode", "ro"}}),
                "sqlite+pysqlite:///a.db?mode=ro"},
        UrlCase{"postgresql+psycopg2://app:pw@db.example.com:5432/sales?"
                "sslmode=require",
                Target("postgresql", "psycopg2", "app", "pw", "db.example.com",
                       5432, "sales", {{"sslmode", "require"}}),
                "postgresql+psycopg2://app:***@db.example.com:5432/sales?"
                "sslmode=require"},
        // Percent-escapes in user, password and query are decoded.
        UrlCase{"postgresql://us%40er:p%40ss%3Aw%2Fd@10.0.0.5/db?"
                "application_name=my%20app&x=a+b",
                Target("postgresql", "", "us@er", "p@ss:w/d", "10.0.0.5", {},
                       "db", {{"application_name", "my app"}, {"x", "a b"}}),
                "postgresql://us%40er:***@10.0.0.5/db?"
                "application_name=my%20app&x=a%20b"},
        // "postgres" is SQLAlchemy's old spelling.
        UrlCase{"postgres://u@h/d",
                Target("postgresql", "", "u", "", "h", {}, "d"),
                "postgresql://u@h/d"},
        UrlCase{"mariadb+pymysql://root:%23secret%21@127.0.0.1:3306/shop",
                Target("mariadb", "pymysql", "root", "#secret!", "127.0.0.1",
                       3306, "shop"),
                "mariadb+pymysql://root:***@127.0.0.1:3306/shop"},
        UrlCase{"mysql://h:3306/d", Target("mysql", "", "", "", "h", 3306, "d"),
                "mysql://h:3306/d"},
        UrlCase{"postgresql://u:pw@[::1]:5433/d",
                Target("postgresql", "", "u", "pw", "::1", 5433, "d"),
                "postgresql://u:***@[::1]:5433/d"},
        // A password holding '/' and '?' before the '@', as SQLAlchemy reads.
        UrlCase{"postgresql://u:a/b?c@h/d",
                Target("postgresql", "", "u", "a/b?c", "h", {}, "d"),
                "postgresql://u:***@h/d"},
        // Secret query values are masked too.
        UrlCase{"postgresql://h/d?password=qpw&sslmode=disable",
                Target("postgresql", "", "", "", "h", {}, "d",
                       {{"password", "qpw"}, {"sslmode", "disable"}}),
                "postgresql://h/d?password=***&sslmode=disable"},
        UrlCase{"postgresql://h:/d",
                Target("postgresql", "", "", "", "h", {}, "d"),
                "postgresql://h/d"},
        // Every spelling SQLAlchemy accepts for the dialects the broker
        // speaks; the driver is kept as written and shown.
        UrlCase{
            "postgres+psycopg2://app:pw@db:5432/sales",
            Target("postgresql", "psycopg2", "app", "pw", "db", 5432, "sales"),
            "postgresql+psycopg2://app:***@db:5432/sales"},
        UrlCase{"postgresql+psycopg://app@db/sales",
                Target("postgresql", "psycopg", "app", "", "db", {}, "sales"),
                "postgresql+psycopg://app@db/sales"},
        UrlCase{"postgresql+asyncpg://app@db/sales",
                Target("postgresql", "asyncpg", "app", "", "db", {}, "sales"),
                "postgresql+asyncpg://app@db/sales"},
        UrlCase{"PostgreSQL+psycopg2://app@db/sales",
                Target("postgresql", "psycopg2", "app", "", "db", {}, "sales"),
                "postgresql+psycopg2://app@db/sales"},
        UrlCase{"mysql+pymysql://u:pw@h/d",
                Target("mysql", "pymysql", "u", "pw", "h", {}, "d"),
                "mysql+pymysql://u:***@h/d"},
        UrlCase{"mysql+mysqldb://u@h/d",
                Target("mysql", "mysqldb", "u", "", "h", {}, "d"),
                "mysql+mysqldb://u@h/d"},
        UrlCase{"mysql+mysqlconnector://u@h:3307/d",
                Target("mysql", "mysqlconnector", "u", "", "h", 3307, "d"),
                "mysql+mysqlconnector://u@h:3307/d"},
        UrlCase{"mariadb://u@h/d", Target("mariadb", "", "u", "", "h", {}, "d"),
                "mariadb://u@h/d"},
        UrlCase{"mariadb+mariadbconnector://u@h/d",
                Target("mariadb", "mariadbconnector", "u", "", "h", {}, "d"),
                "mariadb+mariadbconnector://u@h/d"},
        // A Unix socket as a query option, with no host in the authority.
        UrlCase{"postgresql://u:pw@/db?host=/run/postgresql",
                Target("postgresql", "", "u", "pw", "", {}, "db",
                       {{"host", "/run/postgresql"}}),
                "postgresql://u:***@/db?host=/run/postgresql"},
        UrlCase{"mysql+pymysql://u:pw@/db?unix_socket=/run/mysqld/"
                "mysqld.sock",
                Target("mysql", "pymysql", "u", "pw", "", {}, "db",
                       {{"unix_socket", "/run/mysqld/mysqld.sock"}}),
                "mysql+pymysql://u:***@/db?unix_socket=/run/mysqld/"
                "mysqld.sock"}));

TEST(ParseSqlUrlTest, UnknownDialectsListTheKnownOnes) {
  for (const std::string url :
       {"oracle://u:Pw0rd!@h/d", "mssql+pyodbc://h/d", "postgre://h/d"}) {
    absl::StatusOr<SqlTarget> t = ParseSqlUrl(url);
    ASSERT_FALSE(t.ok()) << url;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(t.status().message());
    EXPECT_THAT(message, HasSubstr("unknown SQL dialect '"));
    EXPECT_THAT(message, HasSubstr("known: sqlite, postgresql (or postgres), "
                                   "mysql, mariadb"));
    EXPECT_THAT(message, Not(HasSubstr("Pw0rd!")));
  }
  absl::StatusOr<SqlTarget> t = SqlTargetFromParams(
      "db", {{"dialect", std::string("oracle")}, {"host", std::string("h")}});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("sql connection 'db': unknown SQL dialect 'oracle'"));
}

TEST(ParseSqlUrlTest, BadPortsAreInvalid) {
  for (const std::string url :
       {"postgresql://u:pw@h:0/d", "postgresql://u:pw@h:65536/d",
        "postgresql://u:pw@h:abc/d", "postgresql://u:pw@h:-1/d"}) {
    absl::StatusOr<SqlTarget> t = ParseSqlUrl(url);
    ASSERT_FALSE(t.ok()) << url;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()), HasSubstr("port"));
  }
  absl::StatusOr<SqlTarget> max = ParseSqlUrl("postgresql://h:65535/d");
  ASSERT_TRUE(max.ok());
  EXPECT_EQ(max->port, 65535);
}

TEST(ParseSqlUrlTest, ErrorsNeverQuoteThePassword) {
  // Without the '@', SQLAlchemy reads the password as the port.
  absl::StatusOr<SqlTarget> t = ParseSqlUrl("postgresql://user:Hunter2Pw/db");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), Not(HasSubstr("Hunter2Pw")));
}

TEST(ParseSqlUrlTest, RejectsNonUrls) {
  for (const std::string url :
       {"", "sqlite", "://x", "sql ite://", "a+b+c://h/d", "sqlite://host/x.db",
        "postgresql://[::1/d"}) {
    absl::StatusOr<SqlTarget> t = ParseSqlUrl(url);
    ASSERT_FALSE(t.ok()) << url;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << url;
  }
}

TEST(SqlTargetTest, MemoryForms) {
  EXPECT_TRUE(ParseSqlUrl("sqlite://")->IsSqliteMemory());
  EXPECT_TRUE(ParseSqlUrl("sqlite:///:memory:")->IsSqliteMemory());
  EXPECT_FALSE(ParseSqlUrl("sqlite:///x.db")->IsSqliteMemory());
  EXPECT_FALSE(ParseSqlUrl("postgresql://h/d")->IsSqliteMemory());
}

TEST(SqlTargetFromParamsTest, FromParts) {
  absl::StatusOr<SqlTarget> t = SqlTargetFromParams(
      "db", {{"dialect", std::string("postgres")},
             {"driver", std::string("psycopg2")},
             {"username", std::string("app")},
             {"password", std::string("Sup3rS3cret")},
             {"host", std::string("db")},
             {"port", std::string("6432")},
             {"database", std::string("sales")},
             {"query.sslmode", std::string("require")},
             {"create_engine_kwargs.pool_size", int64_t{3}}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dialect, "postgresql");
  EXPECT_EQ(t->port, 6432);
  EXPECT_EQ(t->query,
            (std::map<std::string, std::string>{{"sslmode", "require"}}));
  EXPECT_EQ(t->Describe(),
            "postgresql+psycopg2://app:***@db:6432/sales?sslmode=require");
}

TEST(SqlTargetFromParamsTest, PartsOverrideTheUrl) {
  absl::StatusOr<SqlTarget> t = SqlTargetFromParams(
      "db", {{"url", std::string("postgresql://u:old@h1:5432/d1?a=1&b=2")},
             {"host", std::string("h2")},
             {"password", std::string("new")},
             {"port", int64_t{6000}},
             {"query.b", std::string("3")}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->host, "h2");
  EXPECT_EQ(t->password, "new");
  EXPECT_EQ(t->username, "u");
  EXPECT_EQ(t->port, 6000);
  EXPECT_EQ(t->database, "d1");
  EXPECT_EQ(t->query,
            (std::map<std::string, std::string>{{"a", "1"}, {"b", "3"}}));
}

TEST(SqlTargetFromParamsTest, SqliteNeedsOnlyTheDialect) {
  absl::StatusOr<SqlTarget> t =
      SqlTargetFromParams("m", {{"dialect", std::string("sqlite")}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->IsSqliteMemory());
  EXPECT_EQ(t->Describe(), "sqlite://");
}

TEST(SqlTargetFromParamsTest, MissingPartsAreNamed) {
  struct Case {
    Params params;
    std::string missing;
  };
  const Case cases[] = {
      {{{"host", std::string("h")}}, "needs 'dialect' (or a 'url')"},
      {{{"dialect", std::string("postgresql")},
        {"database", std::string("d")},
        {"password", std::string("Pw0rd!")}},
       "needs 'host'"},
      {{{"dialect", std::string("mysql")},
        {"host", std::string("h")},
        {"password", std::string("Pw0rd!")}},
       "needs 'database'"},
      {{{"url", std::string("mariadb://u:Pw0rd!@h")}}, "needs 'database'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<SqlTarget> t = SqlTargetFromParams("mydb", c.params);
    ASSERT_FALSE(t.ok()) << c.missing;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()),
                HasSubstr("sql connection 'mydb' " + c.missing));
    EXPECT_THAT(std::string(t.status().message()), Not(HasSubstr("Pw0rd!")));
  }
}

TEST(SqlTargetFromParamsTest, UnixSocketsStandInForTheHost) {
  absl::StatusOr<SqlTarget> t =
      SqlTargetFromParams("pg", {{"dialect", std::string("postgresql")},
                                 {"database", std::string("d")},
                                 {"query.host", std::string("/run/pg")}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->host, "");
  EXPECT_EQ(t->Describe(), "postgresql:///d?host=/run/pg");

  for (const std::string dialect : {"mysql", "mariadb"}) {
    t = SqlTargetFromParams(
        "my", {{"dialect", dialect},
               {"database", std::string("d")},
               {"query.unix_socket", std::string("/run/mysqld/mysqld.sock")}});
    EXPECT_TRUE(t.ok()) << dialect << ": " << t.status();
  }

  // Each dialect's own option only, and it must not be empty.
  const Params missing[] = {
      {{"dialect", std::string("mysql")},
       {"database", std::string("d")},
       {"query.host", std::string("/run/mysqld")}},
      {{"dialect", std::string("postgresql")},
       {"database", std::string("d")},
       {"query.unix_socket", std::string("/run/pg/.s.PGSQL.5432")}},
      {{"url", std::string("postgresql://u@/d?host=")}},
  };
  for (const Params& params : missing) {
    t = SqlTargetFromParams("x", params);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()),
                HasSubstr("sql connection 'x' needs 'host'"));
    EXPECT_THAT(std::string(t.status().message()),
                HasSubstr("or a Unix socket as 'query."));
  }
}

TEST(SqlTargetFromParamsTest, DialectMayCarryTheDriver) {
  // Streamlit passes dialect+driver to SQLAlchemy as one drivername.
  absl::StatusOr<SqlTarget> t =
      SqlTargetFromParams("db", {{"dialect", std::string("postgres+psycopg2")},
                                 {"host", std::string("h")},
                                 {"database", std::string("d")}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dialect, "postgresql");
  EXPECT_EQ(t->driver, "psycopg2");
  EXPECT_EQ(t->Describe(), "postgresql+psycopg2://h/d");

  t = SqlTargetFromParams("db", {{"dialect", std::string("mysql+pymysql")},
                                 {"driver", std::string("pymysql")},
                                 {"host", std::string("h")},
                                 {"database", std::string("d")}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->Describe(), "mysql+pymysql://h/d");

  t = SqlTargetFromParams("db", {{"dialect", std::string("mysql+pymysql")},
                                 {"driver", std::string("mysqldb")},
                                 {"host", std::string("h")},
                                 {"database", std::string("d")}});
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("give the driver once"));

  // A driver that would make the description ambiguous.
  for (const std::string driver : {"a/b", "x@y", "p q", "psycopg2://"}) {
    t = SqlTargetFromParams("db", {{"dialect", std::string("postgresql")},
                                   {"driver", driver},
                                   {"host", std::string("h")},
                                   {"database", std::string("d")}});
    ASSERT_FALSE(t.ok()) << driver;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()),
                HasSubstr("'driver' must be letters, digits or '_'"));
  }
}

TEST(SqlTargetFromParamsTest, NulCharactersAreRefused) {
  // C client libraries stop at a NUL: the broker would check one string and
  // the library use another.
  const Params cases[] = {
      {{"dialect", std::string("sqlite")},
       {"database", std::string("/ok/a.db\0/../../etc/x", 21)}},
      {{"url", std::string("postgresql://h/d?host=/run/pg%00x")}},
      {{"url", std::string("postgresql://u:p%00w@h/d")}},
  };
  for (const Params& params : cases) {
    absl::StatusOr<SqlTarget> t = SqlTargetFromParams("db", params);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()), HasSubstr("NUL"));
  }
}

TEST(SqlTargetFromParamsTest, BadPortAndBadUrl) {
  for (const Value& port : {Value{int64_t{0}}, Value{int64_t{70000}},
                            Value{std::string("x")}, Value{true}}) {
    absl::StatusOr<SqlTarget> t =
        SqlTargetFromParams("db", {{"dialect", std::string("postgresql")},
                                   {"host", std::string("h")},
                                   {"database", std::string("d")},
                                   {"port", port}});
    ASSERT_FALSE(t.ok()) << ValueToString(port);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()), HasSubstr("'port'"));
  }
  absl::StatusOr<SqlTarget> t =
      SqlTargetFromParams("db", {{"url", std::string("nonsense")}});
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("sql connection 'db'"));
  t = SqlTargetFromParams("db", {{"url", int64_t{1}}});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace connbroker::config
