// The SQLite driver: Database and ResultCursor over one SQLite database.
//
// Backends: one writer and up to PoolSettings.readers read-only readers, each
// in a BackendPool so no sqlite3* is ever used by two threads at once.
//  - The writer opens first (in OpenSqliteDatabase), creates a missing file
//    as SQLAlchemy does, and switches the file to WAL, so readers and the
//    writer do not block each other. It is never closed for idleness: it
//    keeps the -wal/-shm files alive for the read-only readers, and for an
//    in-memory database it is the database.
//  - Readers open lazily with SQLITE_OPEN_READONLY, so a read can never write
//    by accident, and close after PoolSettings.idle_timeout unused.
//  - An in-memory database is private to its sqlite3*, so everything runs on
//    the writer there.
//  - Every backend gets busy_timeout and foreign_keys=ON.
// Query prepares on a reader and moves to the writer when
// sqlite3_stmt_readonly says the statement writes (INSERT ... RETURNING).
// A session's transaction pins the writer (BEGIN IMMEDIATE), or a reader
// when read only (BEGIN DEFERRED), and its statements stay there.
// Cursors build columnar RowBatches: one typed vector per column while a
// batch holds one storage class, a vector of Values once it holds several
// (SQLite's dynamic typing), so no value changes type on the way.
// Nothing throws out of this file: SQLiteCpp's exceptions are caught where
// it is called.
#include "server/drivers/sqlite_database.h"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/drivers/backend_pool.h"
#include "server/drivers/column_builder.h"

namespace connbroker::server {
namespace {

// ---------------------------------------------------------------------------
// Errors

// The one place SQLite result codes become statuses. UNAVAILABLE means "the
// backend is in trouble": the broker resets the pool and retries.
// FAILED_PRECONDITION means the file itself is unusable as configured
// (corrupt, not a database, cannot be opened, read-only): every backend
// would meet it again, so it is neither retried nor a reason to close the
// pool. Everything about the statement itself is INVALID_ARGUMENT and not
// retried.
// The SQLSTATE a client driver would raise for an SQLite error that has a
// standard one: a constraint (IntegrityError in DB-API terms, as the sqlite3
// module raises) or data that does not fit. SQLite has no SQLSTATEs of its
// own; the codes are PostgreSQL's, which clients already know. `rc` may be
// an extended result code, which tells the constraints apart.
absl::string_view StandardSqlState(int rc) {
  switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_ROWID:
      return "23505";
    case SQLITE_CONSTRAINT_FOREIGNKEY:
      return "23503";
    case SQLITE_CONSTRAINT_NOTNULL:
      return "23502";
    case SQLITE_CONSTRAINT_CHECK:
      return "23514";
    default:
      break;
  }
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      return "23000";
    case SQLITE_TOOBIG:
      return "22001";  // string data, right truncation
    case SQLITE_MISMATCH:
      return "22000";  // a value of the wrong type for a STRICT column
    default:
      return "";
  }
}

absl::Status SqliteStatus(int rc, absl::string_view message) {
  std::string text(message);
  switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
      return absl::OkStatus();
    case SQLITE_INTERRUPT:
      return absl::CancelledError("query cancelled (" + text + ")");
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      // Only after busy_timeout has passed: another process holds the lock.
      // The backend is fine; resetting the pool would close the writer and
      // retrying would wait out busy_timeout again for every attempt.
      return absl::AbortedError(text);
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_PROTOCOL:
    case SQLITE_SCHEMA:  // prepare_v2 already retried it; a reconnect may not
      return absl::UnavailableError(text);
    case SQLITE_CORRUPT:   // "database disk image is malformed"
    case SQLITE_NOTADB:    // "file is not a database"
    case SQLITE_CANTOPEN:  // a missing directory, no permission
      // Reopening meets the same file: retrying cost three attempts and a
      // closed pool per query and could never succeed.
      return absl::FailedPreconditionError(text);
    case SQLITE_READONLY:
      // A write to a database opened read-only (mode=ro) or to a file the
      // daemon may not write: permanent. A WAL that needs recovery or a
      // file moved under a backend (the extended codes) may do better on a
      // fresh backend.
      if (rc == SQLITE_READONLY) return absl::FailedPreconditionError(text);
      return absl::UnavailableError(text);
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(text);
    case SQLITE_AUTH:
      // Only our authorizer denies: ATTACH or VACUUM INTO.
      return absl::PermissionDeniedError(
          text +
          " (ATTACH and VACUUM INTO write or read other files; the "
          "connection's secrets section allows them with "
          "allow_attach = true)");
    case SQLITE_PERM:
      return absl::PermissionDeniedError(text);
    case SQLITE_MISUSE:
    case SQLITE_INTERNAL:
      return absl::InternalError(text);
    default: {
      // SQLITE_ERROR (syntax, no such table), CONSTRAINT, MISMATCH, RANGE,
      // TOOBIG, ...
      absl::string_view sqlstate = StandardSqlState(rc);
      if (sqlstate.empty()) return absl::InvalidArgumentError(text);
      return WithSqlState(absl::InvalidArgumentError(text), sqlstate);
    }
  }
}

// The status of the last failure on `db`, with SQLite's own message.
absl::Status SqliteError(sqlite3* db, int rc) {
  const char* message = nullptr;
  // sqlite3_errmsg describes the most recent call on `db`; when that is not
  // the failure at hand (rc from somewhere else), say what rc means.
  if (db != nullptr && (sqlite3_extended_errcode(db) & 0xff) == (rc & 0xff)) {
    message = sqlite3_errmsg(db);
    rc = sqlite3_extended_errcode(db);  // which constraint, for the SQLSTATE
  } else {
    message = sqlite3_errstr(rc);
  }
  return SqliteStatus(rc,
                      message == nullptr ? "unknown SQLite error" : message);
}

absl::Status InternalFromException(const std::exception& e) {
  return absl::InternalError(absl::StrCat("sqlite driver: ", e.what()));
}

// ---------------------------------------------------------------------------
// Backends

struct Target {
  std::string name;  // the connection's name, for messages
  std::string path;  // what sqlite3_open_v2 gets
  bool memory = false;
  bool read_only = false;  // ?mode=ro
  bool create = true;      // ?mode=rw forbids creating the file
  int busy_timeout_ms = 0;
  bool allow_attach = false;  // the section's allow_attach
};

// Denies ATTACH (VACUUM INTO attaches its output file too) unless the
// section allows it: a client must not make the daemon read or create
// files its operator never configured.
// The user data is the flag itself, not a pointer to it.
int Authorize(void* allow_attach, int action, const char*, const char*,
              const char*, const char*) {
  if (action == SQLITE_ATTACH && allow_attach == nullptr) {
    return SQLITE_DENY;
  }
  return SQLITE_OK;
}

// One open sqlite3*. Owned by a pool; used by one thread at a time.
struct SqliteBackend {
  explicit SqliteBackend(std::unique_ptr<SQLite::Database> database)
      : db(std::move(database)) {}
  sqlite3* handle() const { return db->getHandle(); }
  std::unique_ptr<SQLite::Database> db;
};

using Pool = BackendPool<SqliteBackend>;
using Lease = Pool::Lease;

absl::StatusOr<std::unique_ptr<SqliteBackend>> OpenBackend(const Target& target,
                                                           bool writer) {
  // NOMUTEX: the pool already guarantees one thread per backend;
  // sqlite3_interrupt stays safe from other threads regardless.
  int flags = SQLite::OPEN_NOMUTEX;
  if (!writer || target.read_only) {
    flags |= SQLite::OPEN_READONLY;
  } else {
    flags |= SQLite::OPEN_READWRITE;
    if (target.create) flags |= SQLite::OPEN_CREATE;
  }
  try {
    auto db = std::make_unique<SQLite::Database>(target.path, flags,
                                                 target.busy_timeout_ms);
    db->exec("PRAGMA foreign_keys = ON");
    static int allowed = 1;
    sqlite3_set_authorizer(db->getHandle(), &Authorize,
                           target.allow_attach ? &allowed : nullptr);
    if (writer && !target.memory && !target.read_only) {
      // WAL lets the readers read while the writer writes. Persistent in
      // the file, so the readers need not set it. On file systems without
      // shared memory SQLite keeps the old mode, which still works.
      db->exec("PRAGMA journal_mode = WAL");
    }
    return std::make_unique<SqliteBackend>(std::move(db));
  } catch (const SQLite::Exception& e) {
    int rc = e.getErrorCode();
    if (rc <= 0) rc = SQLITE_CANTOPEN;
    return SqliteStatus(
        rc, absl::StrCat("cannot open SQLite database ",
                         target.memory ? ":memory:" : target.path, " for ",
                         target.name, ": ", e.what()));
  } catch (const std::exception& e) {
    return InternalFromException(e);
  }
}

// Runs as a backend goes back to its pool: a statement may have left a
// transaction open (BEGIN through Query/Execute); the next user must not
// inherit it, nor a session's transaction (a PinnedBackend destroyed with
// its transaction open). A failed ROLLBACK closes the backend.
bool RecycleBackend(SqliteBackend& backend) {
  sqlite3* db = backend.handle();
  sqlite3_progress_handler(db, 0, nullptr, nullptr);
  if (sqlite3_get_autocommit(db)) return true;
  return sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK;
}

// ---------------------------------------------------------------------------
// Statements and parameters

struct StmtDeleter {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

// True when `rest` holds anything but blanks, semicolons and comments: more
// SQL after the statement SQLite just prepared.
bool HasMoreStatements(absl::string_view rest) {
  size_t i = 0;
  while (i < rest.size()) {
    char c = rest[i];
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) || c == ';') {
      ++i;
    } else if (rest.substr(i, 2) == "--") {
      size_t end = rest.find('\n', i);
      if (end == absl::string_view::npos) return false;
      i = end + 1;
    } else if (rest.substr(i, 2) == "/*") {
      size_t end = rest.find("*/", i + 2);
      if (end == absl::string_view::npos) return false;
      i = end + 2;
    } else {
      return true;
    }
  }
  return false;
}

// Prepares the first statement of `sql`; `*tail` is what follows it.
// A null statement (blank SQL, only comments) is returned as such.
absl::StatusOr<StmtPtr> PrepareFirst(sqlite3* db, const char* sql,
                                     const char* end, const char** tail) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, static_cast<int>(end - sql), &raw, tail);
  StmtPtr stmt(raw);
  if (rc != SQLITE_OK) return SqliteError(db, rc);
  return stmt;
}

// Prepares `sql`, which must hold exactly one statement (as Python's
// sqlite3.execute requires).
absl::StatusOr<StmtPtr> PrepareOne(sqlite3* db, const std::string& sql) {
  if (sql.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("SQL text too long");
  }
  const char* end = sql.data() + sql.size();
  const char* tail = end;
  absl::StatusOr<StmtPtr> stmt = PrepareFirst(db, sql.data(), end, &tail);
  if (!stmt.ok()) return stmt.status();
  if (*stmt == nullptr) {
    return absl::InvalidArgumentError("the SQL holds no statement");
  }
  if (HasMoreStatements(absl::string_view(tail, end - tail))) {
    return absl::InvalidArgumentError(
        "a query runs one statement at a time; the SQL holds more after the "
        "first (use Execute for scripts)");
  }
  return stmt;
}

int BindValue(sqlite3_stmt* stmt, int index, const v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kBoolValue:
      return sqlite3_bind_int(stmt, index, value.bool_value() ? 1 : 0);
    case v1::Value::kInt64Value:
      return sqlite3_bind_int64(stmt, index, value.int64_value());
    case v1::Value::kDoubleValue:
      return sqlite3_bind_double(stmt, index, value.double_value());
    case v1::Value::kTextValue:
      // TRANSIENT: the cursor steps after the request's params are gone.
      return sqlite3_bind_text64(stmt, index, value.text_value().data(),
                                 value.text_value().size(), SQLITE_TRANSIENT,
                                 SQLITE_UTF8);
    case v1::Value::kBlobValue:
      // data() is never null, so an empty blob binds as X'' and not NULL.
      return sqlite3_bind_blob64(stmt, index, value.blob_value().data(),
                                 value.blob_value().size(), SQLITE_TRANSIENT);
    case v1::Value::kNullValue:
    case v1::Value::KIND_NOT_SET:
      return sqlite3_bind_null(stmt, index);
  }
  return sqlite3_bind_null(stmt, index);
}

std::string Plural(int n, absl::string_view word) {
  return absl::StrCat(n, " ", word, n == 1 ? "" : "s");
}

// Binds `params`: '?' and '?NNN' slots take Params.positional in slot order,
// ':name', '@name' and '$name' take Params.named["name"] (or the key spelled
// with its prefix). Named values the statement does not use are ignored, as
// Python's sqlite3 ignores extra mapping keys; positional counts must match.
absl::Status BindParams(sqlite3* db, sqlite3_stmt* stmt,
                        const v1::Params& params) {
  const int count = sqlite3_bind_parameter_count(stmt);
  int positional_slots = 0;
  int named_slots = 0;
  for (int i = 1; i <= count; ++i) {
    const char* name = sqlite3_bind_parameter_name(stmt, i);
    if (name == nullptr || name[0] == '?') {
      ++positional_slots;
    } else {
      ++named_slots;
    }
  }
  if (positional_slots != params.positional_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "statement has ",
        Plural(positional_slots,
               named_slots > 0 ? "positional parameter" : "parameter"),
        ", ", params.positional_size(), " given"));
  }
  int next_positional = 0;
  for (int i = 1; i <= count; ++i) {
    const char* name = sqlite3_bind_parameter_name(stmt, i);
    const v1::Value* value = nullptr;
    if (name == nullptr || name[0] == '?') {
      value = &params.positional(next_positional++);
    } else {
      auto it = params.named().find(std::string(name + 1));
      if (it == params.named().end()) it = params.named().find(name);
      if (it == params.named().end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("no value for parameter ", name));
      }
      value = &it->second;
    }
    int rc = BindValue(stmt, i, *value);
    if (rc != SQLITE_OK) {
      absl::Status status = SqliteError(db, rc);
      return absl::Status(
          status.code(), absl::StrCat("parameter ", i, ": ", status.message()));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Cells

// Appends the cell of column `col` of the current row of `stmt` as row `row`
// of its column; returns its estimated size. SQLite's storage class decides
// the kind (a column may hold several: ColumnBuilder goes mixed then).
size_t AppendCell(sqlite3_stmt* stmt, int col, int row, ColumnBuilder& out) {
  switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER:
      return out.AppendInt64(row, sqlite3_column_int64(stmt, col));
    case SQLITE_FLOAT:
      return out.AppendDouble(row, sqlite3_column_double(stmt, col));
    case SQLITE_TEXT: {
      const unsigned char* text = sqlite3_column_text(stmt, col);
      const int bytes = sqlite3_column_bytes(stmt, col);
      return out.AppendText(
          row, absl::string_view(reinterpret_cast<const char*>(text), bytes));
    }
    case SQLITE_BLOB: {
      const void* blob = sqlite3_column_blob(stmt, col);
      const int bytes = sqlite3_column_bytes(stmt, col);
      return out.AppendBlob(
          row, absl::string_view(static_cast<const char*>(blob), bytes));
    }
    default:
      return out.AppendNull(row);
  }
}

// ---------------------------------------------------------------------------
// Cursor

// Interrupts the statement from inside SQLite's VM every few thousand
// instructions once cancelled. sqlite3_interrupt alone can be lost when it
// lands just before the first sqlite3_step (SQLite clears the flag when a
// statement starts on an otherwise idle connection).
int ProgressCancelled(void* flag) {
  return static_cast<const std::atomic<bool>*>(flag)->load(
             std::memory_order_relaxed)
             ? 1
             : 0;
}

// A flag that never fires, for calls without a CancelSignal.
const std::atomic<bool> kNeverCancelled{false};

const std::atomic<bool>* FlagOf(CancelSignal* cancel) {
  return cancel != nullptr ? cancel->flag() : &kNeverCancelled;
}

bool Cancelled(CancelSignal* cancel) {
  return cancel != nullptr && cancel->cancelled();
}

class SqliteCursor : public ResultCursor {
 public:
  // Owns `owned` when `borrowed` is null; else runs on *borrowed (a pinned
  // backend's lease, which outlives the cursor and stays pinned when the
  // result ends).
  SqliteCursor(Lease owned, Lease* borrowed, StmtPtr stmt, CancelSignal* cancel)
      : db_((borrowed != nullptr ? *borrowed : owned)->handle()),
        stmt_(std::move(stmt)),
        cancel_(cancel),
        owned_(std::move(owned)),
        lease_(borrowed != nullptr ? borrowed : &owned_) {
    sqlite3_progress_handler(db_, 1000, &ProgressCancelled,
                             const_cast<std::atomic<bool>*>(FlagOf(cancel_)));
    const int columns = sqlite3_column_count(stmt_.get());
    not_null_.assign(columns, false);
    for (int i = 0; i < columns; ++i) {
      v1::Column* column = schema_.add_columns();
      const char* name = sqlite3_column_name(stmt_.get(), i);
      column->set_name(name == nullptr ? "" : name);
      const char* type = sqlite3_column_decltype(stmt_.get(), i);
      if (type != nullptr) column->set_database_type(type);
      column->set_nullable(true);
      // A column read straight from a table says whether it is NOT NULL
      // (needs SQLITE_ENABLE_COLUMN_METADATA, which Debian's build has).
      const char* origin_db = sqlite3_column_database_name(stmt_.get(), i);
      const char* table = sqlite3_column_table_name(stmt_.get(), i);
      const char* origin = sqlite3_column_origin_name(stmt_.get(), i);
      if (table != nullptr && origin != nullptr) {
        int not_null = 0;
        if (sqlite3_table_column_metadata(db_, origin_db, table, origin,
                                          nullptr, nullptr, &not_null, nullptr,
                                          nullptr) == SQLITE_OK) {
          not_null_[i] = not_null != 0;
        }
      }
    }
  }

  ~SqliteCursor() override { Finish(/*broken=*/false); }

  const v1::Schema& schema() const override { return schema_; }

  absl::StatusOr<bool> Next(int max_rows, size_t max_bytes,
                            v1::RowBatch* batch) override {
    try {
      // sqlite3_interrupt is safe from any thread while the backend is
      // ours, which it is for as long as this call runs.
      sqlite3* db = db_;
      ScopedInterrupt armed(cancel_, [db] { sqlite3_interrupt(db); });
      if (!armed.ok()) {
        batch->Clear();
        Finish(/*broken=*/false);
        return absl::CancelledError("query cancelled");
      }
      return NextImpl(max_rows, max_bytes, batch);
    } catch (const std::exception& e) {
      Finish(/*broken=*/true);
      return InternalFromException(e);
    }
  }

 private:
  absl::StatusOr<bool> NextImpl(int max_rows, size_t max_bytes,
                                v1::RowBatch* batch) {
    const int columns = schema_.columns_size();
    std::vector<ColumnBuilder> builders = StartBatch(columns, batch);
    if (stmt_ == nullptr) return false;  // exhausted (or failed) before

    int rows = 0;
    size_t bytes = 0;
    bool more = true;
    while (true) {
      if (!pending_row_) {
        int rc = sqlite3_step(stmt_.get());
        if (rc == SQLITE_DONE) {
          more = false;
          break;
        }
        if (rc != SQLITE_ROW) {
          absl::Status status = SqliteError(db_, rc);
          if (Cancelled(cancel_)) {
            status = absl::CancelledError("query cancelled");
          }
          Finish(/*broken=*/status.code() == absl::StatusCode::kUnavailable);
          return status;
        }
        if (Cancelled(cancel_)) {
          Finish(/*broken=*/false);
          return absl::CancelledError("query cancelled");
        }
      }
      // The row just stepped to does not fit: it stays current in the
      // statement and opens the next batch. Stepping one row ahead is how we
      // know to answer "no more rows" with the last full batch.
      if (rows > 0 && ((max_rows > 0 && rows >= max_rows) ||
                       (max_bytes > 0 && bytes >= max_bytes))) {
        pending_row_ = true;
        break;
      }
      pending_row_ = false;
      for (int i = 0; i < columns; ++i) {
        bytes += AppendCell(stmt_.get(), i, rows, builders[i]);
      }
      ++rows;
    }
    batch->set_row_count(rows);
    for (int i = 0; i < columns; ++i) builders[i].Finish(rows);
    if (!first_batch_done_) {
      first_batch_done_ = true;
      SettleSchema(builders, not_null_, &schema_);
    }
    if (!more) Finish(/*broken=*/false);
    return more;
  }

  // Finalizes the statement and gives the backend back at once (the result
  // is exhausted or failed; no need to wait for the cursor's destruction),
  // unless it is borrowed.
  void Finish(bool broken) {
    // Finalizing ends the read transaction, so WAL checkpoints are not held
    // back.
    stmt_.reset();
    if (lease_ != nullptr) {
      if (broken) lease_->MarkBroken();
      sqlite3_progress_handler(db_, 0, nullptr, nullptr);
      owned_.Release();  // nothing when borrowed
      lease_ = nullptr;
    }
  }

  // Valid while the lease is held (stmt_ != nullptr implies it is).
  sqlite3* const db_;
  StmtPtr stmt_;
  CancelSignal* const cancel_;  // may be null
  v1::Schema schema_;
  std::vector<bool> not_null_;  // declared NOT NULL, per column
  bool first_batch_done_ = false;
  bool pending_row_ = false;  // the statement's current row is not sent yet
  Lease owned_;
  Lease* lease_;  // &owned_ or borrowed; null once finished
};

// ---------------------------------------------------------------------------
// Statements on a claimed backend, for one-shot calls and pinned backends

// Prepares `sql` on the lease's backend; a backend that fails with an
// UNAVAILABLE-class error is closed on return.
absl::StatusOr<StmtPtr> PrepareOn(Lease& lease, const std::string& sql) {
  absl::StatusOr<StmtPtr> stmt = PrepareOne(lease->handle(), sql);
  if (!stmt.ok() && stmt.status().code() == absl::StatusCode::kUnavailable) {
    lease.MarkBroken();
  }
  return stmt;
}

absl::Status Failed(Lease& lease, const absl::Status& status, int index,
                    CancelSignal* cancel) {
  if (Cancelled(cancel)) return absl::CancelledError("statement cancelled");
  if (status.code() == absl::StatusCode::kUnavailable) lease.MarkBroken();
  if (index <= 1) return status;
  return absl::Status(
      status.code(), absl::StrCat("statement ", index, ": ", status.message()));
}

absl::StatusOr<ExecuteResult> RunScript(Lease& lease, const std::string& sql,
                                        const v1::Params& params,
                                        bool has_params, CancelSignal* cancel) {
  sqlite3* db = lease->handle();
  ExecuteResult result;
  const char* next = sql.data();
  const char* end = sql.data() + sql.size();
  int index = 0;
  while (next < end) {
    const char* tail = end;
    absl::StatusOr<StmtPtr> stmt = PrepareFirst(db, next, end, &tail);
    if (!stmt.ok()) return Failed(lease, stmt.status(), index + 1, cancel);
    next = tail;
    if (*stmt == nullptr) continue;  // blanks or a comment
    ++index;
    if (has_params && index == 1 &&
        HasMoreStatements(absl::string_view(tail, end - tail))) {
      return absl::InvalidArgumentError(
          "Execute with parameters runs one statement; the SQL holds more "
          "after the first (run a script without parameters)");
    }
    absl::Status bound = BindParams(db, stmt->get(), params);
    if (!bound.ok()) return Failed(lease, bound, index, cancel);
    const int64_t total_before = sqlite3_total_changes64(db);
    int rc;
    do {
      rc = sqlite3_step(stmt->get());  // rows of a SELECT are dropped
    } while (rc == SQLITE_ROW);
    if (rc != SQLITE_DONE) {
      return Failed(lease, SqliteError(db, rc), index, cancel);
    }
    // sqlite3_changes64 keeps the count of the last INSERT/UPDATE/DELETE
    // across other statements (CREATE TABLE); only trust it when this
    // statement changed something.
    if (sqlite3_total_changes64(db) != total_before) {
      result.rows_affected += sqlite3_changes64(db);
      result.last_insert_id = sqlite3_last_insert_rowid(db);
    }
  }
  return result;
}

// Runs every statement of `sql` in order on the lease's backend. With
// parameters the SQL must hold one statement (which statement would they
// bind to otherwise?); without, it is a script, as Python's executescript
// runs one: each statement in autocommit unless the script says BEGIN (or
// a transaction is open already), and a failure leaves the statements
// before it done.
absl::StatusOr<ExecuteResult> ExecuteOn(Lease& lease, const std::string& sql,
                                        const v1::Params& params,
                                        CancelSignal* cancel) {
  if (sql.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("SQL text too long");
  }
  const bool has_params =
      params.positional_size() > 0 || !params.named().empty();
  sqlite3* db = lease->handle();
  sqlite3_progress_handler(db, 1000, &ProgressCancelled,
                           const_cast<std::atomic<bool>*>(FlagOf(cancel)));
  absl::StatusOr<ExecuteResult> result;
  {
    ScopedInterrupt armed(cancel, [db] { sqlite3_interrupt(db); });
    if (armed.ok()) {
      result = RunScript(lease, sql, params, has_params, cancel);
    } else {
      result = absl::CancelledError("statement cancelled");
    }
  }
  // The handler points at `cancel`, which may not outlive this call; a
  // pinned backend runs more statements before the recycle hook clears it.
  sqlite3_progress_handler(db, 0, nullptr, nullptr);
  return result;
}

// Binds `params` to `stmt` (prepared on the lease's backend) and returns
// its cursor, which owns the lease, or borrows it when `pinned`.
absl::StatusOr<std::unique_ptr<ResultCursor>> StartCursor(
    Lease& lease, bool pinned, StmtPtr stmt, const v1::Params& params,
    CancelSignal* cancel) {
  absl::Status bound = BindParams(lease->handle(), stmt.get(), params);
  if (!bound.ok()) return bound;
  if (pinned) {
    return std::unique_ptr<ResultCursor>(
        new SqliteCursor(Lease(), &lease, std::move(stmt), cancel));
  }
  return std::unique_ptr<ResultCursor>(
      new SqliteCursor(std::move(lease), nullptr, std::move(stmt), cancel));
}

// ---------------------------------------------------------------------------
// Pinned backends

// The writer, or a reader for a read-only transaction, held by one session.
// Statements run where they are asked to: a write on a reader fails with
// SQLite's own error (the reader is opened read-only) instead of moving to
// the writer, which would leave the session's transaction.
class SqlitePinned : public PinnedBackend {
 public:
  SqlitePinned(Lease lease, bool on_reader)
      : lease_(std::move(lease)), on_reader_(on_reader) {}

  ~SqlitePinned() override {
    // RecycleBackend rolls back a transaction still open as the lease goes;
    // a read-only one on the writer is rolled back here, so that
    // query_only can be turned off before the writer serves anyone else.
    if (!query_only_ || !lease_ || lease_.broken()) return;
    sqlite3* db = lease_->handle();
    if (!sqlite3_get_autocommit(db)) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    if (!EndQueryOnly().ok() || query_only_) lease_.MarkBroken();
  }

  absl::Status Begin(const TransactionOptions& options,
                     CancelSignal* cancel) override {
    try {
      if (options.deferrable) {
        return absl::InvalidArgumentError(
            "SQLite has no deferrable transactions (a PostgreSQL option)");
      }
      if (InTransaction()) return TransactionAlreadyOpenError();
      if (on_reader_ && !options.read_only) {
        return absl::FailedPreconditionError(
            "a read-write transaction needs the writer; this session holds a "
            "reader (pinned for a read-only transaction)");
      }
      // Every isolation level is accepted: SQLite's transactions are
      // serializable, and the SQL standard lets a database run a
      // transaction at a stricter level than the one asked for.
      absl::Status ended = EndQueryOnly();
      if (!ended.ok()) return ended;
      if (options.read_only && !on_reader_) {
        // On the writer (an in-memory database has no readers) nothing but
        // query_only keeps a read-only transaction from writing; it is
        // turned off again once the transaction is over.
        absl::StatusOr<ExecuteResult> set =
            ExecuteOn(lease_, "PRAGMA query_only = ON", {}, cancel);
        if (!set.ok()) return set.status();
        query_only_ = true;
      }
      // IMMEDIATE takes the write lock now, so the transaction cannot fail
      // later for want of it (SQLITE_BUSY past busy_timeout: ABORTED here);
      // DEFERRED takes a read snapshot at the first read.
      absl::StatusOr<ExecuteResult> begun = ExecuteOn(
          lease_, options.read_only ? "BEGIN DEFERRED" : "BEGIN IMMEDIATE", {},
          cancel);
      if (!begun.ok()) {
        EndQueryOnly().IgnoreError();  // the status at hand says more
        return begun.status();
      }
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return InternalFromException(e);
    }
  }

  absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params,
      CancelSignal* cancel) override {
    try {
      absl::Status ended = EndQueryOnly();
      if (!ended.ok()) return ended;
      absl::StatusOr<StmtPtr> stmt = PrepareOn(lease_, sql);
      if (!stmt.ok()) return stmt.status();
      return StartCursor(lease_, /*pinned=*/true, *std::move(stmt), params,
                         cancel);
    } catch (const std::exception& e) {
      return InternalFromException(e);
    }
  }

  absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                        const v1::Params& params,
                                        CancelSignal* cancel) override {
    try {
      absl::Status ended = EndQueryOnly();
      if (!ended.ok()) return ended;
      return ExecuteOn(lease_, sql, params, cancel);
    } catch (const std::exception& e) {
      return InternalFromException(e);
    }
  }

  bool InTransaction() override {
    return !sqlite3_get_autocommit(lease_->handle());
  }

  bool broken() const override { return lease_.broken(); }

 private:
  // Turns query_only off once the read-only transaction that set it is
  // over (COMMIT, ROLLBACK or an error ended it), before the next
  // statement.
  absl::Status EndQueryOnly() {
    if (!query_only_ || InTransaction()) return absl::OkStatus();
    sqlite3* db = lease_->handle();
    const int rc =
        sqlite3_exec(db, "PRAGMA query_only = OFF", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) {
      absl::Status status = SqliteError(db, rc);
      // A writer stuck read-only must not go back to the pool.
      lease_.MarkBroken();
      return status;
    }
    query_only_ = false;
    return absl::OkStatus();
  }

  Lease lease_;
  const bool on_reader_;
  bool query_only_ = false;  // PRAGMA query_only is on (see Begin)
};

// ---------------------------------------------------------------------------
// Database

class SqliteDatabase : public Database {
 public:
  SqliteDatabase(std::shared_ptr<Pool> writer, std::shared_ptr<Pool> readers)
      : writer_(std::move(writer)), readers_(std::move(readers)) {}

  ~SqliteDatabase() override {
    // Idle backends close now; cursors still alive keep their pool (shared)
    // and close their backend when they end.
    writer_->Close();
    if (readers_ != nullptr) readers_->Close();
  }

  void Reserve(Access access, CancelSignal* cancel,
               ReserveCallback ready) override {
    const bool on_reader = access == Access::kRead && readers_ != nullptr;
    (on_reader ? readers_ : writer_)->Reserve(cancel, std::move(ready));
  }

  absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params, Reservation slot,
      CancelSignal* cancel) override {
    try {
      return QueryImpl(sql, params, std::move(slot), cancel);
    } catch (const std::exception& e) {
      return InternalFromException(e);
    }
  }

  absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                        const v1::Params& params,
                                        Reservation slot,
                                        CancelSignal* cancel) override {
    try {
      return ExecuteImpl(sql, params, std::move(slot), cancel);
    } catch (const std::exception& e) {
      return InternalFromException(e);
    }
  }

  absl::StatusOr<std::unique_ptr<PinnedBackend>> Pin(
      Reservation slot) override {
    const bool on_reader = OnReader(slot);
    if (!on_reader && slot.source() != writer_.get()) {
      return absl::InvalidArgumentError(
          "the reservation does not belong to this connection");
    }
    absl::StatusOr<Lease> lease = ClaimOn(std::move(slot));
    if (!lease.ok()) return lease.status();
    return std::unique_ptr<PinnedBackend>(
        new SqlitePinned(*std::move(lease), on_reader));
  }

  int Reset() override {
    int count = writer_->Reset();
    if (readers_ != nullptr) count += readers_->Reset();
    return count;
  }

  int ShedIdle() override {
    return readers_ != nullptr ? readers_->ShedIdle() : 0;
  }

  void Maintain() override {
    // The writer is kept (see the file comment); readers go when idle.
    if (readers_ != nullptr) {
      readers_->CloseIdle(absl::Now());
      readers_->FillMinIdle();
    }
  }

  v1::PoolStats Stats() const override {
    v1::PoolStats stats;
    AddPoolCounters(writer_->Stats(), &stats);
    if (readers_ != nullptr) AddPoolCounters(readers_->Stats(), &stats);
    return stats;
  }

 private:
  bool OnReader(const Reservation& slot) const {
    return readers_ != nullptr && slot.source() == readers_.get();
  }

  absl::StatusOr<Lease> ClaimOn(Reservation slot) {
    if (OnReader(slot)) return readers_->Claim(std::move(slot));
    return writer_->Claim(std::move(slot));
  }

  absl::StatusOr<std::unique_ptr<ResultCursor>> QueryImpl(
      const std::string& sql, const v1::Params& params, Reservation slot,
      CancelSignal* cancel) {
    const bool on_reader = OnReader(slot);
    absl::StatusOr<Lease> lease = ClaimOn(std::move(slot));
    if (!lease.ok()) return lease.status();
    absl::StatusOr<StmtPtr> stmt = PrepareOn(*lease, sql);
    if (!stmt.ok()) return stmt.status();
    if (on_reader && !sqlite3_stmt_readonly(stmt->get())) {
      // It writes (INSERT ... RETURNING, a write in a CTE, a pragma that
      // changes the file): readers are read-only, so the writer runs it.
      // This one wait holds the worker (bounded by the acquire timeout):
      // whether a statement writes is known only once it is prepared.
      stmt->reset();  // finalize before the backend goes back
      lease->Release();
      lease = writer_->Acquire(cancel);
      if (!lease.ok()) return lease.status();
      stmt = PrepareOn(*lease, sql);
      if (!stmt.ok()) return stmt.status();
    }
    return StartCursor(*lease, /*pinned=*/false, *std::move(stmt), params,
                       cancel);
  }

  // ExecuteOn on the writer. A script that leaves a transaction open is
  // rolled back and refused: its writes would otherwise be acknowledged now
  // and rolled back when the backend is recycled.
  absl::StatusOr<ExecuteResult> ExecuteImpl(const std::string& sql,
                                            const v1::Params& params,
                                            Reservation slot,
                                            CancelSignal* cancel) {
    absl::StatusOr<Lease> lease = writer_->Claim(std::move(slot));
    if (!lease.ok()) return lease.status();
    absl::StatusOr<ExecuteResult> result =
        ExecuteOn(*lease, sql, params, cancel);
    if (result.ok() && !sqlite3_get_autocommit((*lease)->handle())) {
      // RecycleBackend rolls it back as the lease goes.
      return TransactionLeftOpenError();
    }
    return result;
  }

  const std::shared_ptr<Pool> writer_;
  const std::shared_ptr<Pool> readers_;  // null: everything on the writer
};

int ClampMillis(absl::Duration d) {
  int64_t ms = absl::ToInt64Milliseconds(d);
  return static_cast<int>(std::clamp<int64_t>(ms, 0, INT_MAX));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> OpenSqliteDatabase(
    const config::ConnectionSpec& spec, const DriverContext& context) {
  const config::SqlTarget& sql = spec.sql;
  const config::PoolSettings& settings = spec.pool;
  Target target;
  target.name = spec.name;
  target.memory = sql.IsSqliteMemory();
  target.path = target.memory ? ":memory:" : sql.database;
  target.busy_timeout_ms = ClampMillis(settings.busy_timeout);
  if (auto it = spec.params.find("allow_attach"); it != spec.params.end()) {
    const bool* allowed = std::get_if<bool>(&it->second);
    target.allow_attach = allowed != nullptr && *allowed;
  }
  // SQLite's own URI options; others (SQLAlchemy's, e.g. check_same_thread)
  // are ignored.
  auto mode = sql.query.find("mode");
  if (mode != sql.query.end() && !target.memory) {
    if (mode->second == "ro") target.read_only = true;
    if (mode->second == "rw") target.create = false;
  }

  // One writer, never closed for idleness (see the file comment).
  BackendPoolOptions writer_options = PoolOptionsFor(spec, "writer", context);
  writer_options.pool_size = 1;
  writer_options.max_overflow = 0;
  writer_options.min_idle = 0;
  writer_options.idle_timeout = absl::InfiniteDuration();
  writer_options.recycle = absl::InfiniteDuration();
  writer_options.pre_ping_after = absl::InfiniteDuration();
  std::shared_ptr<Pool> writer =
      Pool::Create(writer_options,
                   {[target] { return OpenBackend(target, /*writer=*/true); },
                    &RecycleBackend, nullptr});

  // pool_size readers; SQLite gains nothing from overflow readers.
  std::shared_ptr<Pool> readers;
  if (!target.memory && settings.pool_size > 0) {
    BackendPoolOptions reader_options = PoolOptionsFor(spec, "reader", context);
    reader_options.max_overflow = 0;
    reader_options.pre_ping_after = absl::InfiniteDuration();
    readers = Pool::Create(
        reader_options,
        {[target] { return OpenBackend(target, /*writer=*/false); },
         &RecycleBackend, nullptr});
  }

  // Opening the writer now makes a bad path fail at Connect, creates a
  // missing file and puts it in WAL before any reader looks at it.
  {
    absl::StatusOr<Lease> first = writer->Acquire();
    if (!first.ok()) return first.status();
  }
  return std::unique_ptr<Database>(
      new SqliteDatabase(std::move(writer), std::move(readers)));
}

}  // namespace connbroker::server
