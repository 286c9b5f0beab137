// OpenDatabase: picks the driver for a connection spec by type and dialect.
//
// The only place that knows which drivers this build has, so adding one
// touches this switch and nothing else.
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "connbroker/config/spec.h"
#include "server/drivers/database.h"
#include "server/drivers/mysql_database.h"
#include "server/drivers/postgres_database.h"
#include "server/drivers/sqlite_database.h"

namespace connbroker::server {

absl::StatusOr<std::unique_ptr<Database>> OpenDatabase(
    const config::ConnectionSpec& spec) {
  return OpenDatabaseWith(spec, DriverContext());
}

absl::StatusOr<std::unique_ptr<Database>> OpenDatabaseWith(
    const config::ConnectionSpec& spec, const DriverContext& context) {
  if (spec.type != config::kTypeSql) {
    return absl::InvalidArgumentError(
        absl::StrCat("connection ", spec.name, " has type '", spec.type,
                     "', which has no database driver here (only 'sql')"));
  }
  const std::string& dialect = spec.sql.dialect;
  if (dialect == "sqlite") return OpenSqliteDatabase(spec, context);
  if (dialect == "postgresql") return OpenPostgresDatabase(spec, context);
  if (dialect == "mysql" || dialect == "mariadb") {
    return OpenMysqlDatabase(spec, context);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("connection ", spec.name, " has the unknown SQL dialect '",
                   dialect, "' (known: sqlite, postgresql, mysql, mariadb)"));
}

}  // namespace connbroker::server
