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
  std::string dialect;  // "sqlite", "postgresql", "mysql", "mariadb"
  std::string driver;   // after '+', e.g. "psycopg2"; may be empty
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
// Percent-escapes in user, password and query are decoded. For sqlite,
// "sqlite://" and "sqlite:///:memory:" are in-memory, "sqlite:///rel.db" is
// relative to the daemon's working directory, "sqlite:////abs.db" absolute.
// Errors are INVALID_ARGUMENT and never quote the password.
absl::StatusOr<SqlTarget> ParseSqlUrl(const std::string& url);

// Builds the target of an `sql` connection from its params: `url` if
// present (other parts given beside it override the URL's), else the parts
// dialect, driver, username, password, host, port, database, query.*.
// A missing required part is INVALID_ARGUMENT naming it ("sql connection
// 'db' needs 'dialect' (or a url)"; postgresql/mysql also need 'host' and
// 'database').
absl::StatusOr<SqlTarget> SqlTargetFromParams(const std::string& name,
                                              const Params& params);

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_SQL_URL_H_
