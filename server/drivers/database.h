// Database and ResultCursor: what a driver offers the broker, for one database.
//
// A Database is the pool of backend (physical) connections behind one cached
// connection. It knows one database and nothing of gRPC or of caching. It is
// safe to call from many threads at once; it never lets two threads use one
// backend connection at the same time.
//
// Errors (absl::Status) carry the database's own message, without secrets:
//   INVALID_ARGUMENT    the database refused the statement (syntax, constraint,
//                       wrong parameter count): not retried.
//   UNAVAILABLE         the backend broke or cannot be reached: the broker
//                       resets the pool and retries.
//   RESOURCE_EXHAUSTED  no backend became free within the acquire timeout.
//   CANCELLED           ResultCursor::Cancel interrupted the statement.
//   UNIMPLEMENTED       a dialect this build does not support.
#ifndef CONNBROKER_SERVER_DRIVERS_DATABASE_H_
#define CONNBROKER_SERVER_DRIVERS_DATABASE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "connbroker/config/spec.h"
#include "connbroker/v1/broker.pb.h"
#include "connbroker/v1/values.pb.h"

namespace connbroker::server {

// One running statement holding one backend connection until destroyed.
// Not thread-safe, except Cancel().
class ResultCursor {
 public:
  virtual ~ResultCursor() = default;

  // Column names and database types are set when the cursor is returned;
  // each column's `kind` and `nullable` are filled by the first Next() from
  // what the first batch holds.
  virtual const v1::Schema& schema() const = 0;

  // Clears `batch` and appends up to `max_rows` rows, stopping early once the
  // batch holds about `max_bytes`. Returns true when more rows may follow,
  // false when the result is exhausted (`batch` may still hold rows).
  virtual absl::StatusOr<bool> Next(int max_rows, size_t max_bytes,
                                    v1::RowBatch* batch) = 0;

  // From any thread: makes a running or the next Next() fail with CANCELLED.
  virtual void Cancel() = 0;
};

struct ExecuteResult {
  int64_t rows_affected = 0;
  int64_t last_insert_id = 0;
};

class Database {
 public:
  virtual ~Database() = default;

  // Prepares and starts `sql` with `params` bound. Statements that only read
  // run on a reader backend, others on the writer.
  virtual absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params) = 0;

  // Runs `sql` to completion on the writer backend.
  virtual absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                                const v1::Params& params) = 0;

  // Closes every idle backend connection and marks those in use to close
  // when returned; the next use reconnects. Returns how many were closed or
  // marked.
  virtual int Reset() = 0;

  // Closes backends idle for longer than the pool's idle timeout (janitor).
  virtual void CloseIdle() = 0;

  virtual v1::PoolStats Stats() const = 0;
};

// Opens the Database of `spec` (type "sql"): SQLite now; postgresql and
// mysql/mariadb are UNIMPLEMENTED ("... not built yet"). Opening the first
// backend happens here, so a bad path fails at Connect.
absl::StatusOr<std::unique_ptr<Database>> OpenDatabase(
    const config::ConnectionSpec& spec);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_DATABASE_H_
