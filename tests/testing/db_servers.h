// The real PostgreSQL and MariaDB servers the tests run against, as described
// by the CONNBROKER_TEST_PG_* and CONNBROKER_TEST_MYSQL_* environment
// variables that tests/servers/db-servers.sh writes to DIR/env.sh and
// tests/run.sh exports before running ctest.
//
// The getters return std::nullopt when the environment lacks the variables.
// A test that needs a server must then fail, not skip, with this message:
//
//   const auto pg = connbroker::testing::PgServerFromEnv();
//   if (!pg) {
//     FAIL() << connbroker::testing::kNoServersMessage;
//   }
//
// Restarting a server (to simulate a database restart): run the command in
// CONNBROKER_TEST_PG_START / _STOP (or CONNBROKER_TEST_MYSQL_START / _STOP)
// through a shell, or `db-servers.sh restart-pg DIR`; they keep the port and
// the data.
#ifndef CONNBROKER_TESTS_TESTING_DB_SERVERS_H_
#define CONNBROKER_TESTS_TESTING_DB_SERVERS_H_

#include <stdlib.h>

#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace connbroker::testing {

// What a test prints when FAIL()ing because a getter returned std::nullopt.
inline constexpr std::string_view kNoServersMessage =
    "no test database servers in the environment: run through tests/run.sh "
    "(or tests/servers/db-servers.sh start DIR; source DIR/env.sh)";

namespace db_servers_internal {

// The value of the environment variable `name`, or std::nullopt when it is
// unset or empty.
inline std::optional<std::string> Env(const std::string& name) {
  const char* value = ::getenv(name.c_str());
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

// The environment variable `name` as a TCP port, or std::nullopt when it is
// unset or not a number in 1..65535.
inline std::optional<int> EnvPort(const std::string& name) {
  const std::optional<std::string> text = Env(name);
  if (!text) return std::nullopt;
  int port = 0;
  const char* end = text->data() + text->size();
  const auto [ptr, ec] = std::from_chars(text->data(), end, port);
  if (ec != std::errc() || ptr != end || port < 1 || port > 65535) {
    return std::nullopt;
  }
  return port;
}

// postgresql://user:password@host:port/database (or mysql://...). The test
// values need no percent-encoding.
inline std::string Url(std::string_view scheme, const std::string& user,
                       const std::string& password, const std::string& host,
                       int port, const std::string& database) {
  return std::string(scheme) + "://" + user + ":" + password + "@" + host +
         ":" + std::to_string(port) + "/" + database;
}

}  // namespace db_servers_internal

// A PostgreSQL server with a password account over TCP (and a Unix socket in
// socket_dir, for libpq's host=socket_dir).
struct PgServer {
  std::string host;
  int port = 0;
  std::string user;
  std::string password;
  std::string database;
  std::string socket_dir;

  // postgresql://user:password@host:port/database
  std::string Url() const {
    return db_servers_internal::Url("postgresql", user, password, host, port,
                                    database);
  }
};

// A MariaDB server with a password account over TCP (and on the Unix socket
// `socket`).
struct MysqlServer {
  std::string host;
  int port = 0;
  std::string user;
  std::string password;
  std::string database;
  std::string socket;

  // mysql://user:password@host:port/database
  std::string Url() const {
    return db_servers_internal::Url("mysql", user, password, host, port,
                                    database);
  }
};

// The PostgreSQL server of CONNBROKER_TEST_PG_{HOST,PORT,USER,PASSWORD,
// DATABASE,SOCKET_DIR}, or std::nullopt when any is missing (FAIL() with
// kNoServersMessage then).
inline std::optional<PgServer> PgServerFromEnv() {
  using db_servers_internal::Env;
  auto host = Env("CONNBROKER_TEST_PG_HOST");
  auto port = db_servers_internal::EnvPort("CONNBROKER_TEST_PG_PORT");
  auto user = Env("CONNBROKER_TEST_PG_USER");
  auto password = Env("CONNBROKER_TEST_PG_PASSWORD");
  auto database = Env("CONNBROKER_TEST_PG_DATABASE");
  auto socket_dir = Env("CONNBROKER_TEST_PG_SOCKET_DIR");
  if (!host || !port || !user || !password || !database || !socket_dir) {
    return std::nullopt;
  }
  return PgServer{*std::move(host),     *port,
                  *std::move(user),     *std::move(password),
                  *std::move(database), *std::move(socket_dir)};
}

// The MariaDB server of CONNBROKER_TEST_MYSQL_{HOST,PORT,USER,PASSWORD,
// DATABASE,SOCKET}, or std::nullopt when any is missing (FAIL() with
// kNoServersMessage then).
inline std::optional<MysqlServer> MysqlServerFromEnv() {
  using db_servers_internal::Env;
  auto host = Env("CONNBROKER_TEST_MYSQL_HOST");
  auto port = db_servers_internal::EnvPort("CONNBROKER_TEST_MYSQL_PORT");
  auto user = Env("CONNBROKER_TEST_MYSQL_USER");
  auto password = Env("CONNBROKER_TEST_MYSQL_PASSWORD");
  auto database = Env("CONNBROKER_TEST_MYSQL_DATABASE");
  auto socket = Env("CONNBROKER_TEST_MYSQL_SOCKET");
  if (!host || !port || !user || !password || !database || !socket) {
    return std::nullopt;
  }
  return MysqlServer{*std::move(host),     *port,
                     *std::move(user),     *std::move(password),
                     *std::move(database), *std::move(socket)};
}

}  // namespace connbroker::testing

#endif  // CONNBROKER_TESTS_TESTING_DB_SERVERS_H_
