// The SQLite driver: a Database over one SQLite file (or in-memory database).
//
// Kept apart from database.h so OpenDatabase can dispatch on the dialect
// without knowing how SQLite is done; see sqlite_database.cc for the design
// (one writer, lazily opened read-only readers, WAL, columnar batches).
#ifndef CONNBROKER_SERVER_DRIVERS_SQLITE_DATABASE_H_
#define CONNBROKER_SERVER_DRIVERS_SQLITE_DATABASE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "connbroker/config/spec.h"
#include "server/drivers/database.h"

namespace connbroker::server {

// Opens the writer backend of `spec.sql` (dialect "sqlite") at once, so a bad
// path fails here: UNAVAILABLE with SQLite's message and the path.
absl::StatusOr<std::unique_ptr<Database>> OpenSqliteDatabase(
    const config::ConnectionSpec& spec, const DriverContext& context = {});

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_SQLITE_DATABASE_H_
