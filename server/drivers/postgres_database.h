// The PostgreSQL driver: a Database over libpq, for dialect "postgresql".
//
// Kept apart from database.h so OpenDatabase can dispatch on the dialect
// without knowing libpq; see postgres_database.cc for the design (one pool of
// PGconn, single-row mode streaming, PQcancel, named parameters rewritten to
// $n and bound by the server, repeated statements prepared per backend).
#ifndef CONNBROKER_SERVER_DRIVERS_POSTGRES_DATABASE_H_
#define CONNBROKER_SERVER_DRIVERS_POSTGRES_DATABASE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "connbroker/config/spec.h"
#include "server/drivers/database.h"

namespace connbroker::server {

// Opens the first backend of `spec.sql` (dialect "postgresql") at once, so a
// bad host or password fails here: UNAVAILABLE with libpq's message, or
// PERMISSION_DENIED when the server refused the credentials. No message
// holds the password.
absl::StatusOr<std::unique_ptr<Database>> OpenPostgresDatabase(
    const config::ConnectionSpec& spec, const DriverContext& context = {});

// Exposed for tests only.
namespace postgres_internal {

// SQL whose named placeholders became $1..$n.
struct RewrittenSql {
  std::string sql;
  // names[i] is the parameter bound to $(i+1); a name used twice appears once.
  std::vector<std::string> names;
};

// Rewrites `:name` (SQLAlchemy's text()) and `%(name)s` (psycopg2's pyformat)
// placeholders to $n, leaving alone what sits in string literals, quoted
// identifiers, dollar-quoted strings and comments, and `::` casts. With
// pyformat placeholders, `%%` means `%` (as psycopg2 has it). `\:` is a
// literal colon (as in SQLAlchemy). INVALID_ARGUMENT when the SQL also holds
// $n placeholders.
absl::StatusOr<RewrittenSql> RewriteNamedParameters(absl::string_view sql);

// The highest $n placeholder in `sql` outside quotes and comments (0: none).
int64_t HighestPlaceholder(absl::string_view sql);

// The name connbroker reports for a built-in type OID ("int4", "text[]"),
// or "" for OIDs it does not know by heart (looked up on the server).
std::string BuiltinTypeName(uint32_t oid);

}  // namespace postgres_internal

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_POSTGRES_DATABASE_H_
