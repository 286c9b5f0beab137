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

namespace connbroker::server {
namespace {

// ---------------------------------------------------------------------------
// Errors

// The one place SQLite result codes become statuses. UNAVAILABLE means "the
// backend or file is in trouble": the broker resets the pool and retries.
// Everything about the statement itself is INVALID_ARGUMENT and not retried.
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
      return absl::UnavailableError(text);
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_FULL:
    case SQLITE_PROTOCOL:
    case SQLITE_SCHEMA:  // prepare_v2 already retried it; a reconnect may not
      return absl::UnavailableError(text);
    case SQLITE_READONLY:
      // The file became read-only under a read-write backend, or its WAL
      // needs recovery: a fresh backend may do better. A write to a database
      // opened read-only (mode=ro) is the statement's fault.
      if (rc == SQLITE_READONLY) return absl::InvalidArgumentError(text);
      return absl::UnavailableError(text);
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(text);
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(text);
    case SQLITE_MISUSE:
    case SQLITE_INTERNAL:
      return absl::InternalError(text);
    default:
      // SQLITE_ERROR (syntax, no such table), CONSTRAINT, MISMATCH, RANGE,
      // TOOBIG, ...
      return absl::InvalidArgumentError(text);
  }
}

// The status of the last failure on `db`, with SQLite's own message.
absl::Status SqliteError(sqlite3* db, int rc) {
  const char* message = nullptr;
  // sqlite3_errmsg describes the most recent call on `db`; when that is not
  // the failure at hand (rc from somewhere else), say what rc means.
  if (db != nullptr && (sqlite3_extended_errcode(db) & 0xff) == (rc & 0xff)) {
    message = sqlite3_errmsg(db);
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
};

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
// inherit it. Transactions proper come later, pinned to one client.
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
// Batches

// SQLite TEXT may hold bytes that are not UTF-8; protobuf strings must be
// UTF-8 or the client fails to parse the batch. Such cells travel as BLOBs.
bool IsValidUtf8(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    // Fast path: eight ASCII bytes at a time.
    if (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int length;
    uint32_t min;
    uint32_t code;
    if ((c & 0xe0) == 0xc0) {
      length = 2, min = 0x80, code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      length = 3, min = 0x800, code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      length = 4, min = 0x10000, code = c & 0x07;
    } else {
      return false;
    }
    if (i + length > n) return false;
    for (int k = 1; k < length; ++k) {
      unsigned char cc = s[i + k];
      if ((cc & 0xc0) != 0x80) return false;
      code = (code << 6) | (cc & 0x3f);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      return false;
    }
    i += length;
  }
  return true;
}

// A column's storage class in the batch being built: one of SQLite's
// fundamental types, none yet (every row so far NULL), or several.
constexpr int kNoClass = 0;
constexpr int kMixed = -1;

// About what a cell costs on the wire: its payload plus a tag and a length.
constexpr size_t kCellOverhead = 2;

// Builds one ColumnVector of a batch in place, typed while the batch's
// non-NULL cells share one storage class, and switching to `mixed` (moving
// what it holds so far) when a second class appears.
class ColumnBuilder {
 public:
  explicit ColumnBuilder(v1::ColumnVector* out) : out_(out) {}

  int storage_class() const { return class_; }
  bool has_null() const { return !null_rows_.empty(); }

  // Appends the cell of column `col` of the current row of `stmt` as row
  // `row` of the batch; returns its estimated size.
  size_t Append(sqlite3_stmt* stmt, int col, int row) {
    int type = sqlite3_column_type(stmt, col);
    const unsigned char* text = nullptr;
    int bytes = 0;
    if (type == SQLITE_TEXT) {
      text = sqlite3_column_text(stmt, col);
      bytes = sqlite3_column_bytes(stmt, col);
      if (text != nullptr && !IsValidUtf8(text, static_cast<size_t>(bytes))) {
        type = SQLITE_BLOB;
      }
    } else if (type == SQLITE_BLOB) {
      text = static_cast<const unsigned char*>(sqlite3_column_blob(stmt, col));
      bytes = sqlite3_column_bytes(stmt, col);
    }
    if (type == SQLITE_NULL) {
      null_rows_.push_back(row);
      AppendPlaceholder();
      return 1;
    }
    if (class_ == kNoClass) {
      StartTyped(type, row);
    } else if (class_ != type && class_ != kMixed) {
      ConvertToMixed(row);
    }
    const char* data = reinterpret_cast<const char*>(text);
    if (class_ == kMixed) {
      v1::Value* value = out_->mutable_mixed()->add_values();
      switch (type) {
        case SQLITE_INTEGER:
          value->set_int64_value(sqlite3_column_int64(stmt, col));
          break;
        case SQLITE_FLOAT:
          value->set_double_value(sqlite3_column_double(stmt, col));
          break;
        case SQLITE_TEXT:
          value->mutable_text_value()->assign(data, bytes);
          break;
        default:
          value->mutable_blob_value()->assign(data, bytes);
          break;
      }
    } else {
      switch (type) {
        case SQLITE_INTEGER:
          out_->mutable_int64s()->add_values(sqlite3_column_int64(stmt, col));
          break;
        case SQLITE_FLOAT:
          out_->mutable_doubles()->add_values(sqlite3_column_double(stmt, col));
          break;
        case SQLITE_TEXT:
          out_->mutable_texts()->add_values()->assign(data, bytes);
          break;
        default:
          out_->mutable_blobs()->add_values()->assign(data, bytes);
          break;
      }
    }
    if (type == SQLITE_TEXT || type == SQLITE_BLOB) {
      return static_cast<size_t>(bytes) + kCellOverhead;
    }
    return 8 + kCellOverhead;
  }

  // Writes the null mask once the batch has `rows` rows: only when a NULL
  // was seen, then with one entry per row.
  void Finish(int rows) {
    if (null_rows_.empty()) return;
    auto* nulls = out_->mutable_nulls();
    nulls->Resize(rows, false);
    for (int row : null_rows_) nulls->Set(row, true);
  }

 private:
  void AppendPlaceholder() {
    switch (class_) {
      case kNoClass:
        break;  // no vector yet: StartTyped fills the rows before it
      case kMixed:
        out_->mutable_mixed()->add_values()->set_null_value(v1::NULL_VALUE);
        break;
      case SQLITE_INTEGER:
        out_->mutable_int64s()->add_values(0);
        break;
      case SQLITE_FLOAT:
        out_->mutable_doubles()->add_values(0);
        break;
      case SQLITE_TEXT:
        out_->mutable_texts()->add_values();
        break;
      default:
        out_->mutable_blobs()->add_values();
        break;
    }
  }

  // The first non-NULL cell, at `row`: every row before it was NULL.
  void StartTyped(int type, int row) {
    class_ = type;
    switch (type) {
      case SQLITE_INTEGER:
        out_->mutable_int64s()->mutable_values()->Resize(row, 0);
        break;
      case SQLITE_FLOAT:
        out_->mutable_doubles()->mutable_values()->Resize(row, 0);
        break;
      case SQLITE_TEXT:
        for (int i = 0; i < row; ++i) out_->mutable_texts()->add_values();
        if (row == 0) out_->mutable_texts();
        break;
      default:
        for (int i = 0; i < row; ++i) out_->mutable_blobs()->add_values();
        if (row == 0) out_->mutable_blobs();
        break;
    }
  }

  // Rewrites rows [0, row) of the typed vector as Values, NULLs included.
  void ConvertToMixed(int row) {
    v1::ColumnVector typed;
    typed.Swap(out_);  // out_ is now empty; `typed` holds the old vector
    auto* values = out_->mutable_mixed()->mutable_values();
    values->Reserve(row + 1);
    size_t next_null = 0;
    for (int r = 0; r < row; ++r) {
      v1::Value* value = values->Add();
      if (next_null < null_rows_.size() && null_rows_[next_null] == r) {
        ++next_null;
        value->set_null_value(v1::NULL_VALUE);
        continue;
      }
      switch (class_) {
        case SQLITE_INTEGER:
          value->set_int64_value(typed.int64s().values(r));
          break;
        case SQLITE_FLOAT:
          value->set_double_value(typed.doubles().values(r));
          break;
        case SQLITE_TEXT:
          value->set_text_value(
              std::move(*typed.mutable_texts()->mutable_values(r)));
          break;
        default:
          value->set_blob_value(
              std::move(*typed.mutable_blobs()->mutable_values(r)));
          break;
      }
    }
    class_ = kMixed;
  }

  v1::ColumnVector* out_;
  int class_ = kNoClass;
  std::vector<int> null_rows_;  // ascending
};

v1::ValueKind KindOfClass(int storage_class) {
  switch (storage_class) {
    case SQLITE_INTEGER:
      return v1::VALUE_KIND_INT64;
    case SQLITE_FLOAT:
      return v1::VALUE_KIND_DOUBLE;
    case SQLITE_TEXT:
      return v1::VALUE_KIND_TEXT;
    case SQLITE_BLOB:
      return v1::VALUE_KIND_BLOB;
    case kMixed:
      return v1::VALUE_KIND_MIXED;
    default:
      return v1::VALUE_KIND_NULL;
  }
}

// ---------------------------------------------------------------------------
// Cursor

// Interrupts the statement from inside SQLite's VM every few thousand
// instructions once cancelled. sqlite3_interrupt alone can be lost when it
// lands just before the first sqlite3_step (SQLite clears the flag when a
// statement starts on an otherwise idle connection).
int ProgressCancelled(void* flag) {
  return static_cast<std::atomic<bool>*>(flag)->load(std::memory_order_relaxed)
             ? 1
             : 0;
}

class SqliteCursor : public ResultCursor {
 public:
  SqliteCursor(Lease lease, StmtPtr stmt)
      : db_(lease->handle()), stmt_(std::move(stmt)), lease_(std::move(lease)) {
    sqlite3_progress_handler(db_, 1000, &ProgressCancelled, &cancelled_);
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
      return NextImpl(max_rows, max_bytes, batch);
    } catch (const std::exception& e) {
      Finish(/*broken=*/true);
      return InternalFromException(e);
    }
  }

  void Cancel() override {
    cancelled_.store(true, std::memory_order_relaxed);
    absl::MutexLock lock(&mu_);
    // Only while the backend is still ours: once returned to the pool it
    // may run someone else's statement.
    if (lease_) sqlite3_interrupt(lease_->handle());
  }

 private:
  absl::StatusOr<bool> NextImpl(int max_rows, size_t max_bytes,
                                v1::RowBatch* batch) {
    batch->Clear();
    const int columns = schema_.columns_size();
    std::vector<ColumnBuilder> builders;
    builders.reserve(columns);
    for (int i = 0; i < columns; ++i) {
      builders.emplace_back(batch->add_columns());
    }
    if (cancelled_.load(std::memory_order_relaxed)) {
      Finish(/*broken=*/false);
      return absl::CancelledError("query cancelled");
    }
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
          if (cancelled_.load(std::memory_order_relaxed)) {
            status = absl::CancelledError("query cancelled");
          }
          Finish(/*broken=*/status.code() == absl::StatusCode::kUnavailable);
          return status;
        }
        if (cancelled_.load(std::memory_order_relaxed)) {
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
        bytes += builders[i].Append(stmt_.get(), i, rows);
      }
      ++rows;
    }
    batch->set_row_count(rows);
    for (int i = 0; i < columns; ++i) builders[i].Finish(rows);
    if (!first_batch_done_) {
      first_batch_done_ = true;
      for (int i = 0; i < columns; ++i) {
        v1::Column* column = schema_.mutable_columns(i);
        column->set_kind(KindOfClass(builders[i].storage_class()));
        column->set_nullable(!not_null_[i] || builders[i].has_null());
      }
    }
    if (!more) Finish(/*broken=*/false);
    return more;
  }

  // Finalizes the statement and gives the backend back at once (the result
  // is exhausted or failed; no need to wait for the cursor's destruction).
  void Finish(bool broken) {
    if (stmt_ != nullptr) {
      // Ends the read transaction, so WAL checkpoints are not held back.
      stmt_.reset();
    }
    Lease lease;
    {
      absl::MutexLock lock(&mu_);
      lease = std::move(lease_);
    }
    if (lease) {
      if (broken) lease.MarkBroken();
      sqlite3_progress_handler(db_, 0, nullptr, nullptr);
    }
    // `lease` returns the backend here, outside mu_.
  }

  // Owner thread only. Valid while the lease is held (stmt_ != nullptr
  // implies it is).
  sqlite3* const db_;
  StmtPtr stmt_;
  v1::Schema schema_;
  std::vector<bool> not_null_;  // declared NOT NULL, per column
  bool first_batch_done_ = false;
  bool pending_row_ = false;  // the statement's current row is not sent yet
  std::atomic<bool> cancelled_{false};

  // Guards the lease against Cancel() racing with its return to the pool.
  absl::Mutex mu_;
  Lease lease_ ABSL_GUARDED_BY(mu_);
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

  absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params) override {
    try {
      return QueryImpl(sql, params);
    } catch (const std::exception& e) {
      return InternalFromException(e);
    }
  }

  absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                        const v1::Params& params) override {
    try {
      return ExecuteImpl(sql, params);
    } catch (const std::exception& e) {
      return InternalFromException(e);
    }
  }

  int Reset() override {
    int count = writer_->Reset();
    if (readers_ != nullptr) count += readers_->Reset();
    return count;
  }

  void CloseIdle() override {
    // The writer is kept (see the file comment); readers go when idle.
    if (readers_ != nullptr) readers_->CloseIdle(absl::Now());
  }

  v1::PoolStats Stats() const override {
    BackendPoolCounters w = writer_->Stats();
    BackendPoolCounters r;
    if (readers_ != nullptr) r = readers_->Stats();
    v1::PoolStats stats;
    stats.set_open(w.open + r.open);
    stats.set_in_use(w.in_use + r.in_use);
    stats.set_max_size(w.max_size + r.max_size);
    stats.set_opened_total(w.opened_total + r.opened_total);
    stats.set_acquire_timeouts(w.acquire_timeouts + r.acquire_timeouts);
    return stats;
  }

 private:
  // Prepares `sql` on a backend of `pool`; a backend that fails with an
  // UNAVAILABLE-class error is closed on return.
  static absl::StatusOr<StmtPtr> PrepareOn(Lease& lease,
                                           const std::string& sql) {
    absl::StatusOr<StmtPtr> stmt = PrepareOne(lease->handle(), sql);
    if (!stmt.ok() && stmt.status().code() == absl::StatusCode::kUnavailable) {
      lease.MarkBroken();
    }
    return stmt;
  }

  absl::StatusOr<std::unique_ptr<ResultCursor>> QueryImpl(
      const std::string& sql, const v1::Params& params) {
    const bool on_reader = readers_ != nullptr;
    absl::StatusOr<Lease> lease =
        on_reader ? readers_->Acquire() : writer_->Acquire();
    if (!lease.ok()) return lease.status();
    absl::StatusOr<StmtPtr> stmt = PrepareOn(*lease, sql);
    if (!stmt.ok()) return stmt.status();
    if (on_reader && !sqlite3_stmt_readonly(stmt->get())) {
      // It writes (INSERT ... RETURNING, a write in a CTE, a pragma that
      // changes the file): readers are read-only, so the writer runs it.
      stmt->reset();  // finalize before the backend goes back
      lease->Release();
      lease = writer_->Acquire();
      if (!lease.ok()) return lease.status();
      stmt = PrepareOn(*lease, sql);
      if (!stmt.ok()) return stmt.status();
    }
    absl::Status bound = BindParams((*lease)->handle(), stmt->get(), params);
    if (!bound.ok()) return bound;
    return std::unique_ptr<ResultCursor>(
        new SqliteCursor(std::move(*lease), std::move(*stmt)));
  }

  // Runs every statement of `sql` in order. With parameters the SQL must
  // hold one statement (which statement would they bind to otherwise?);
  // without, it is a script, as Python's executescript runs one: each
  // statement in autocommit unless the script says BEGIN, and a failure
  // leaves the statements before it done.
  absl::StatusOr<ExecuteResult> ExecuteImpl(const std::string& sql,
                                            const v1::Params& params) {
    if (sql.size() > static_cast<size_t>(INT_MAX)) {
      return absl::InvalidArgumentError("SQL text too long");
    }
    const bool has_params =
        params.positional_size() > 0 || !params.named().empty();
    absl::StatusOr<Lease> lease = writer_->Acquire();
    if (!lease.ok()) return lease.status();
    sqlite3* db = (*lease)->handle();
    ExecuteResult result;
    const char* next = sql.data();
    const char* end = sql.data() + sql.size();
    int index = 0;
    while (next < end) {
      const char* tail = end;
      absl::StatusOr<StmtPtr> stmt = PrepareFirst(db, next, end, &tail);
      if (!stmt.ok()) return Failed(*lease, stmt.status(), index + 1);
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
      if (!bound.ok()) return Failed(*lease, bound, index);
      const int64_t total_before = sqlite3_total_changes64(db);
      int rc;
      do {
        rc = sqlite3_step(stmt->get());  // rows of a SELECT are dropped
      } while (rc == SQLITE_ROW);
      if (rc != SQLITE_DONE) {
        return Failed(*lease, SqliteError(db, rc), index);
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

  static absl::Status Failed(Lease& lease, const absl::Status& status,
                             int index) {
    if (status.code() == absl::StatusCode::kUnavailable) lease.MarkBroken();
    if (index <= 1) return status;
    return absl::Status(status.code(), absl::StrCat("statement ", index, ": ",
                                                    status.message()));
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
    const config::ConnectionSpec& spec) {
  const config::SqlTarget& sql = spec.sql;
  const config::PoolSettings& settings = spec.pool;
  Target target;
  target.name = spec.name;
  target.memory = sql.IsSqliteMemory();
  target.path = target.memory ? ":memory:" : sql.database;
  target.busy_timeout_ms = ClampMillis(settings.busy_timeout);
  // SQLite's own URI options; others (SQLAlchemy's, e.g. check_same_thread)
  // are ignored.
  auto mode = sql.query.find("mode");
  if (mode != sql.query.end() && !target.memory) {
    if (mode->second == "ro") target.read_only = true;
    if (mode->second == "rw") target.create = false;
  }

  BackendPoolOptions writer_options;
  writer_options.name = spec.name;
  writer_options.role = "writer";
  writer_options.max_size = 1;
  writer_options.acquire_timeout = settings.acquire_timeout;
  std::shared_ptr<Pool> writer = Pool::Create(
      writer_options, [target] { return OpenBackend(target, /*writer=*/true); },
      &RecycleBackend);

  std::shared_ptr<Pool> readers;
  if (!target.memory && settings.readers > 0) {
    BackendPoolOptions reader_options;
    reader_options.name = spec.name;
    reader_options.role = "reader";
    reader_options.max_size = settings.readers;
    reader_options.acquire_timeout = settings.acquire_timeout;
    reader_options.idle_timeout = settings.idle_timeout;
    readers = Pool::Create(
        reader_options,
        [target] { return OpenBackend(target, /*writer=*/false); },
        &RecycleBackend);
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
