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
//   CANCELLED           the call's CancelSignal interrupted the statement.
//   FAILED_PRECONDITION the statement left a transaction open (rolled back),
//                       or the database is unusable as configured and
//                       every backend would meet the same fault (a corrupt
//                       or read-only SQLite file, one that is not a
//                       database, a database that does not exist): not
//                       retried, backends kept.
//   RESOURCE_EXHAUSTED  also: a daemon-wide bound (limits.max_backends,
//                       limits.max_open_files) refused a new backend.
//   PERMISSION_DENIED   the database refused the credentials or the
//                       statement is not allowed (SQLite's authorizer).
//   ABORTED             lock contention past the busy timeout, a
//                       serialization failure or deadlock: the backend is
//                       fine and kept; not retried (the client may).
//   UNIMPLEMENTED       a dialect this build does not support.
// A status may carry the database's SQLSTATE (WithSqlState).
#ifndef CONNBROKER_SERVER_DRIVERS_DATABASE_H_
#define CONNBROKER_SERVER_DRIVERS_DATABASE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "connbroker/config/spec.h"
#include "connbroker/v1/broker.pb.h"
#include "connbroker/v1/values.pb.h"
#include "server/drivers/backend_pool.h"
#include "server/drivers/cancel_signal.h"

namespace connbroker::server {

// Which backends a statement needs: a reader may run it, or only a writer.
// Drivers with one kind of backend (PostgreSQL, MySQL) treat both alike.
enum class Access { kRead, kWrite };

// One running statement holding one backend connection until destroyed (or
// until its result is exhausted or failed, whichever comes first). Not
// thread-safe: the CancelSignal given to Database::Query is how another
// thread interrupts it.
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
  // CANCELLED once the query's CancelSignal fired.
  virtual absl::StatusOr<bool> Next(int max_rows, size_t max_bytes,
                                    v1::RowBatch* batch) = 0;
};

struct ExecuteResult {
  int64_t rows_affected = 0;
  int64_t last_insert_id = 0;
};

// How a transaction begins (a session's BeginRequest).
struct TransactionOptions {
  enum class Isolation {
    kDefault,  // the database's own
    kReadUncommitted,
    kReadCommitted,
    kRepeatableRead,
    kSerializable,
  };
  Isolation isolation = Isolation::kDefault;
  bool read_only = false;
  bool deferrable = false;  // PostgreSQL only
};

// One backend of a Database held by one client session: its statements run
// on it in order, and a transaction begun on it stays open across calls
// until COMMIT or ROLLBACK. Destroying it rolls back whatever is still open
// and returns the backend to its pool (closed instead when broken). Not
// thread-safe: one call at a time, from a worker; a CancelSignal interrupts
// a running statement from another thread.
class PinnedBackend {
 public:
  virtual ~PinnedBackend() = default;

  // Starts a transaction with `options`, in the database's own words
  // (SQLite: BEGIN IMMEDIATE, or BEGIN DEFERRED when read only; PostgreSQL:
  // BEGIN ISOLATION LEVEL ... READ ONLY DEFERRABLE; MySQL: SET TRANSACTION
  // ..., START TRANSACTION READ ONLY). INVALID_ARGUMENT for an option the
  // database does not have (deferrable outside PostgreSQL), FAILED_PRECONDITION
  // when a transaction is already open.
  virtual absl::Status Begin(const TransactionOptions& options,
                             CancelSignal* cancel) = 0;

  // As Database::Query, on this backend. The cursor borrows the backend:
  // destroy it (or read it to the end) before the next call, and before
  // this object. Nothing is rolled back when it ends.
  virtual absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params,
      CancelSignal* cancel) = 0;

  // As Database::Execute, on this backend, except that a transaction the
  // statement opens (BEGIN) stays open.
  virtual absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                                const v1::Params& params,
                                                CancelSignal* cancel) = 0;

  // True while a transaction is open on the backend (asked of the database
  // connection itself, so COMMIT, ROLLBACK, or an error that ended the
  // transaction are all seen).
  virtual bool InTransaction() = 0;

  // True once the backend broke (UNAVAILABLE): whatever the transaction did
  // is lost, and the backend closes when this is destroyed.
  virtual bool broken() const = 0;
};

// A snapshot of a Database's pools, for ListConnections and stats.
using PoolStats = v1::PoolStats;

class Database {
 public:
  virtual ~Database() = default;

  // Asks for a backend able to run a statement of `access`; `ready` runs
  // exactly once with a Reservation for Query/Execute, or with an error:
  // RESOURCE_EXHAUSTED past the acquire timeout or past the bound on queued
  // calls, CANCELLED when `cancel` fires first, UNAVAILABLE when closed.
  // It runs at once when a backend is free, else later on whichever thread
  // frees one or on a timer thread: waiting holds no thread, and `ready`
  // must not block (hand the work to a worker). `cancel` may be null; else
  // it must outlive the wait.
  virtual void Reserve(Access access, CancelSignal* cancel,
                       ReserveCallback ready) = 0;

  // Starts `sql` with `params` bound (by the server, never spliced into the
  // SQL) on the backend of `slot` (from Reserve(kRead) on this database),
  // and returns a cursor streaming its rows. `cancel` (may be null) must
  // outlive the cursor: firing it interrupts the statement on the server
  // (sqlite3_interrupt, PQcancel, KILL QUERY) and the cursor answers
  // CANCELLED. The backend goes back to the pool clean: anything left open
  // is rolled back.
  virtual absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params, Reservation slot,
      CancelSignal* cancel) = 0;

  // Runs `sql` to completion on the backend of `slot` (from Reserve(kWrite)).
  // A statement that leaves a transaction open is rolled back and refused
  // (FAILED_PRECONDITION): an acknowledged write must not be lost later.
  virtual absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                                const v1::Params& params,
                                                Reservation slot,
                                                CancelSignal* cancel) = 0;

  // Claims the backend of `slot` (from Reserve(kWrite); or Reserve(kRead)
  // for a read-only transaction, which SQLite then runs on a reader) for one
  // session; see PinnedBackend. Errors as Claim's: UNAVAILABLE when no
  // backend can be opened.
  virtual absl::StatusOr<std::unique_ptr<PinnedBackend>> Pin(Reservation slot) {
    (void)slot;
    return absl::UnimplementedError(
        "this database does not run transactions across calls");
  }

  // Closes every idle backend connection and marks those in use to close
  // when returned; the next use reconnects. Returns how many were closed or
  // marked.
  virtual int Reset() = 0;

  // Janitor upkeep: closes backends idle past the idle timeout or past
  // their recycle age, and opens backends up to min_idle.
  virtual void Maintain() = 0;

  // Closes idle backends beyond min_idle now (the daemon's backend budget is
  // exhausted). Returns how many.
  virtual int ShedIdle() { return 0; }

  virtual PoolStats Stats() const = 0;
};

// Blocking helpers over Reserve (for tests and code already on a worker):
// wait for a slot, then run.
absl::StatusOr<std::unique_ptr<ResultCursor>> QueryNow(
    Database& database, const std::string& sql, const v1::Params& params = {},
    CancelSignal* cancel = nullptr);
absl::StatusOr<ExecuteResult> ExecuteNow(Database& database,
                                         const std::string& sql,
                                         const v1::Params& params = {},
                                         CancelSignal* cancel = nullptr);
// Pins a backend able to run `access` (kWrite for a transaction that may
// write, kRead for a read-only one).
absl::StatusOr<std::unique_ptr<PinnedBackend>> PinNow(
    Database& database, Access access, CancelSignal* cancel = nullptr);

// The SQLSTATE of a database error travels as a payload of its status (the
// service puts it in the ErrorDetail trailer).
absl::Status WithSqlState(absl::Status status, absl::string_view sqlstate);
std::string SqlStateOf(const absl::Status& status);

// What Execute answers after rolling back a transaction the statement left
// open (see Database::Execute).
absl::Status TransactionLeftOpenError();

// What PinnedBackend::Begin answers when a transaction is already open.
absl::Status TransactionAlreadyOpenError();

// The SQL standard's words for `isolation` ("READ COMMITTED"), which
// PostgreSQL and MySQL share; empty for kDefault.
absl::string_view IsolationLevelSql(TransactionOptions::Isolation isolation);

// Adds a pool's counters to `stats` (a connection with several pools, as
// SQLite's writer and readers, reports their sum).
void AddPoolCounters(const BackendPoolCounters& counters, PoolStats* stats);

// BackendPoolOptions for a pool of `role` from a connection's settings,
// counting its backends in `context`'s daemon-wide budget.
BackendPoolOptions PoolOptionsFor(const config::ConnectionSpec& spec,
                                  std::string role,
                                  const DriverContext& context = {});

// Opens the Database of `spec` (type "sql"): sqlite, postgresql,
// mysql/mariadb. The first backend is opened here, so a bad address or
// password fails at Connect (UNAVAILABLE, or PERMISSION_DENIED for bad
// credentials), with the database's message and no secret.
absl::StatusOr<std::unique_ptr<Database>> OpenDatabase(
    const config::ConnectionSpec& spec);

// OpenDatabase whose pools count their backends in `context.budget` (the
// daemon's; OpenDatabase alone is unbounded). A separate name, not an
// overload, so OpenDatabase still converts to a DatabaseFactory.
absl::StatusOr<std::unique_ptr<Database>> OpenDatabaseWith(
    const config::ConnectionSpec& spec, const DriverContext& context);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_DATABASE_H_
