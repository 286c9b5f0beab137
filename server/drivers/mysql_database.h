// The MySQL/MariaDB driver: a Database over one MySQL or MariaDB server,
// through libmariadb (MariaDB Connector/C).
//
// Kept apart from database.h so OpenDatabase can dispatch on the dialect
// without knowing how MySQL is done; see mysql_database.cc for the design
// (one pool of backends, server-side prepared statements cached per backend,
// unbuffered streaming, KILL QUERY for cancellation).
#ifndef CONNBROKER_SERVER_DRIVERS_MYSQL_DATABASE_H_
#define CONNBROKER_SERVER_DRIVERS_MYSQL_DATABASE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "connbroker/config/spec.h"
#include "server/drivers/database.h"

namespace connbroker::server {

// Opens the first backend of `spec.sql` (dialect "mysql" or "mariadb") at
// once, so a bad address fails here with UNAVAILABLE and bad credentials with
// PERMISSION_DENIED, each with the server's message and never the password.
//
// Query options read from spec.sql.query (others are ignored): charset
// (default utf8mb4), unix_socket, ssl (true: refuse a connection without
// TLS), ssl_ca, ssl_cert, ssl_key, ssl_verify_cert (true/false). A host
// starting with '/' is a Unix socket path.
absl::StatusOr<std::unique_ptr<Database>> OpenMysqlDatabase(
    const config::ConnectionSpec& spec, const DriverContext& context = {});

namespace mysql_internal {

// `sql` with its named parameter markers -- SQLAlchemy text()'s `:name` and
// pymysql's `%(name)s` -- turned into `?`, skipping quoted strings, quoted
// identifiers and comments. Exposed for tests.
struct RewrittenSql {
  std::string sql;
  // The name of each `?` written, in order (a name may repeat).
  std::vector<std::string> names;
  // How each was spelled, for messages: ":id", "%(id)s".
  std::vector<std::string> spellings;
  // `?` markers already in the SQL (mixing them with names is refused by the
  // caller).
  int question_marks = 0;
};
RewrittenSql RewriteNamedParams(absl::string_view sql);

}  // namespace mysql_internal
}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_MYSQL_DATABASE_H_
