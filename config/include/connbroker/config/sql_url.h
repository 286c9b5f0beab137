// SqlTarget: where an `sql` connection points, from a URL or from parts,
// spelled as SQLAlchemy spells them.
#ifndef CONNBROKER_CONFIG_SQL_URL_H_
#define CONNBROKER_CONFIG_SQL_URL_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "connbroker/config/value.h"

namespace connbroker::config {

struct SqlTarget {
  // "sqlite", "postgresql" (also written "postgres"), "mysql", "mariadb".
  std::string dialect;
  // After '+', e.g. "psycopg2", kept as written; may be empty. It names the
  // Python DBAPI SQLAlchemy would use; the broker speaks the protocol itself
  // whatever it says, and shows it in Describe().
  std::string driver;
  std::string username;
  std::string password;  // a secret: never in Describe()
  std::string host;
  std::optional<int> port;
  // sqlite: the file path ("" or ":memory:" for an in-memory database);
  // others: the database name.
  std::string database;
  std::map<std::string, std::string> query;  // ?key=value options

  bool IsSqliteMemory() const {
    return dialect == "sqlite" && (database.empty() || database == ":memory:");
  }

  // The URL with the password replaced by "***":
  // "postgresql://app:***@db:5432/sales", "sqlite:////srv/app.db".
  std::string Describe() const;

  friend bool operator==(const SqlTarget&, const SqlTarget&) = default;
};

// Parses
// "dialect[+driver]://[user[:password]@][host][:port][/database][?k=v&...]".
// Dialects as SQLAlchemy spells them: sqlite, postgresql (postgres),
// mysql, mariadb, each with any driver (postgresql+psycopg2,
// postgresql+asyncpg, mysql+pymysql, mariadb+mariadbconnector,
// sqlite+pysqlite, ...). Percent-escapes in user, password and query are
// decoded. For sqlite, "sqlite://" and "sqlite:///:memory:" are in-memory,
// "sqlite:///rel.db" is relative to the daemon's working directory,
// "sqlite:////abs.db" absolute. Errors are INVALID_ARGUMENT (an unknown
// dialect lists the known ones) and never quote the password.
absl::StatusOr<SqlTarget> ParseSqlUrl(const std::string& url);

// Builds the target of an `sql` connection from its params: `url` if
// present (other parts given beside it override the URL's), else the parts
// dialect, driver, username, password, host, port, database, query.*.
// `dialect` may carry the driver too ("postgresql+psycopg2"), as SQLAlchemy's
// drivername does. A missing required part is INVALID_ARGUMENT naming it
// ("sql connection 'db' needs 'dialect' (or a url)"); postgresql and
// mysql/mariadb also need 'database', and 'host' unless a Unix socket is
// given instead: query.host for postgresql
// (postgresql://u:p@/db?host=/run/postgresql), query.unix_socket for
// mysql/mariadb. An unknown dialect is INVALID_ARGUMENT listing the known
// ones.
absl::StatusOr<SqlTarget> SqlTargetFromParams(const std::string& name,
                                              const Params& params);

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_SQL_URL_H_
