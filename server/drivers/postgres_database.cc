// The PostgreSQL driver: Database and ResultCursor over libpq.
//
// Backends: one BackendPool of PGconn (role "backend"); reads and writes
// alike, since a PostgreSQL session can do both. The first backend opens in
// OpenPostgresDatabase so a bad address or password fails at Connect.
//
// Statements go out with PQsendQueryParams (one statement, parameters bound
// by the server in text form, blobs in binary form as bytea) or, for an
// Execute without parameters, PQsendQuery (a script of several statements).
// A single statement the server plans (SELECT, INSERT, ...) that runs a
// second time on a backend is prepared there (PQsendPrepare, then
// PQsendQueryPrepared), so later runs skip parsing and planning; each
// backend keeps its 64 most recently used ones (StatementCache). Measured on
// one connection, a primary-key lookup ran 1.5 to 2.6 times as fast prepared
// and a five-way join 5 to 8 times, while `SELECT 1` gained little; preparing
// on the first run would cost a one-off statement a round trip (up to 40%
// slower).
// The cache heals itself: DEALLOCATE ALL / DISCARD ALL clear it, and a
// statement that fails because its prepared form is gone (26000) or its
// result type changed (0A000) is prepared afresh and run once more.
// Results come back in single-row mode, so a result of any size streams
// through a bounded amount of memory; cursors cut rows into columnar
// RowBatches with ColumnBuilder. Named parameters (`:name`, `%(name)s`) are
// rewritten to $n by a small scanner that knows PostgreSQL's quoting; values
// never enter the SQL text.
//
// Waiting for the server is a poll() loop instead of a blocking PQgetResult:
// it looks at the CancelSignal every kPollSlice, sends PQcancel from the
// thread that owns the backend, and sends it again while the statement keeps
// running, because a cancel request that reaches the server before the
// statement does is ignored there.
//
// A session's transaction pins one backend (PgPinned) and runs its
// statements through the same paths, keeping the backend between calls.
//
// Hygiene: a backend goes back to the pool only outside a transaction (the
// recycle hook rolls back; a failed ROLLBACK closes it), never in the middle
// of a result (cursors cancel and drain, or mark the backend broken), and is
// closed when libpq says the link is gone.
#include "server/drivers/postgres_database.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/drivers/backend_pool.h"
#include "server/drivers/cancel_signal.h"
#include "server/drivers/column_builder.h"
#include "server/drivers/single_pool_database.h"
#include "server/drivers/sql_text.h"

namespace connbroker::server {
namespace postgres_internal {
namespace {

bool IsWordByte(char c) {
  // Bytes >= 0x80 belong to UTF-8 letters: SQLAlchemy's \w is Unicode-aware.
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Copies sql[from, to) to `out`, turning `%%` into `%` when `collapse`
// (psycopg2 reads `%%` as a percent sign anywhere in the SQL text).
void CopyText(absl::string_view sql, size_t from, size_t to, bool collapse,
              std::string* out) {
  if (!collapse) {
    out->append(sql.data() + from, to - from);
    return;
  }
  for (size_t i = from; i < to; ++i) {
    out->push_back(sql[i]);
    if (sql[i] == '%' && i + 1 < to && sql[i + 1] == '%') ++i;
  }
}

// End (exclusive) of the quoted run starting at sql[i] == quote; doubled
// quotes stay inside, and so do backslash escapes when `backslashes`.
size_t SkipQuoted(absl::string_view sql, size_t i, char quote,
                  bool backslashes) {
  size_t j = i + 1;
  while (j < sql.size()) {
    if (backslashes && sql[j] == '\\') {
      j += 2;
    } else if (sql[j] == quote) {
      if (j + 1 < sql.size() && sql[j + 1] == quote) {
        j += 2;
      } else {
        return j + 1;
      }
    } else {
      ++j;
    }
  }
  return sql.size();  // unterminated: the server reports it
}

// End of the /* */ comment at sql[i]; PostgreSQL's comments nest.
size_t SkipBlockComment(absl::string_view sql, size_t i) {
  int depth = 0;
  size_t j = i;
  while (j < sql.size()) {
    if (sql.substr(j, 2) == "/*") {
      ++depth;
      j += 2;
    } else if (sql.substr(j, 2) == "*/") {
      j += 2;
      if (--depth == 0) return j;
    } else {
      ++j;
    }
  }
  return sql.size();
}

// The dollar-quote tag starting at sql[i] == '$' ("$$", "$tag$"), or empty
// when none starts there.
absl::string_view DollarTag(absl::string_view sql, size_t i) {
  size_t j = i + 1;
  if (j < sql.size() && IsDigit(sql[j])) return {};  // $1: a placeholder
  while (j < sql.size() && IsWordByte(sql[j])) ++j;
  if (j < sql.size() && sql[j] == '$') return sql.substr(i, j + 1 - i);
  return {};
}

// Walks SQL text the way PostgreSQL's lexer splits it into quoted and
// unquoted runs. With `named`, rewrites named placeholders to $n; without,
// only notes the highest $n.
class Rewriter {
 public:
  Rewriter(absl::string_view sql, bool named, bool collapse_percent)
      : sql_(sql), named_(named), collapse_(collapse_percent) {}

  absl::StatusOr<RewrittenSql> Run() {
    const size_t n = sql_.size();
    size_t i = 0;
    while (i < n) {
      const char c = sql_[i];
      const char next = i + 1 < n ? sql_[i + 1] : '\0';
      const char prev = i > 0 ? sql_[i - 1] : '\0';
      if (c == '\'') {
        // E'...' strings take backslash escapes; others (with
        // standard_conforming_strings, the default since 9.1) do not.
        const bool escapes =
            (prev == 'E' || prev == 'e') && (i < 2 || !IsWordByte(sql_[i - 2]));
        Copy(i, SkipQuoted(sql_, i, '\'', escapes), &i);
      } else if (c == '"') {
        Copy(i, SkipQuoted(sql_, i, '"', false), &i);
      } else if (c == '-' && next == '-') {
        const size_t end = sql_.find('\n', i);
        Copy(i, end == absl::string_view::npos ? n : end + 1, &i);
      } else if (c == '/' && next == '*') {
        Copy(i, SkipBlockComment(sql_, i), &i);
      } else if (c == '$') {
        if (IsWordByte(prev)) {  // a$b is one identifier
          Copy(i, i + 1, &i);
        } else if (IsDigit(next)) {
          if (named_) {
            return absl::InvalidArgumentError(
                "the SQL mixes $n placeholders with named parameters; use "
                "one style");
          }
          size_t end = i + 1;
          int64_t number = 0;
          while (end < n && IsDigit(sql_[end])) {
            number = std::min<int64_t>(number * 10 + (sql_[end] - '0'),
                                       int64_t{1} << 32);
            ++end;
          }
          max_numbered_ = std::max(max_numbered_, number);
          Copy(i, end, &i);
        } else if (absl::string_view tag = DollarTag(sql_, i); !tag.empty()) {
          const size_t close = sql_.find(tag, i + tag.size());
          Copy(i, close == absl::string_view::npos ? n : close + tag.size(),
               &i);
        } else {
          Copy(i, i + 1, &i);
        }
      } else if (!named_) {
        result_.sql.push_back(c);
        ++i;
      } else if (c == ':' && next == ':') {
        Copy(i, i + 2, &i);  // a cast: x::int
      } else if (c == ':' && IsWordByte(next) && !IsWordByte(prev)) {
        size_t end = i + 1;
        while (end < n && IsWordByte(sql_[end])) ++end;
        Placeholder(sql_.substr(i + 1, end - i - 1));
        i = end;
      } else if (c == '\\' && next == ':') {
        result_.sql.push_back(':');  // SQLAlchemy's escaped colon
        i += 2;
      } else if (c == '%' && next == '(') {
        const size_t close = sql_.find(')', i + 2);
        if (close != absl::string_view::npos && close + 1 < n &&
            sql_[close + 1] == 's') {
          Placeholder(sql_.substr(i + 2, close - i - 2));
          pyformat_ = true;
          i = close + 2;
        } else {
          Copy(i, i + 1, &i);
        }
      } else if (c == '%' && next == '%') {
        Copy(i, i + 2, &i);
      } else {
        result_.sql.push_back(c);
        ++i;
      }
    }
    return std::move(result_);
  }

  bool pyformat() const { return pyformat_; }
  // The highest $n seen (without `named`).
  int64_t max_numbered() const { return max_numbered_; }

 private:
  void Copy(size_t from, size_t to, size_t* i) {
    CopyText(sql_, from, to, collapse_, &result_.sql);
    *i = to;
  }

  void Placeholder(absl::string_view name) {
    auto [it, inserted] =
        numbers_.try_emplace(std::string(name), result_.names.size() + 1);
    if (inserted) result_.names.emplace_back(name);
    absl::StrAppend(&result_.sql, "$", it->second);
  }

  const absl::string_view sql_;
  const bool named_;
  const bool collapse_;
  bool pyformat_ = false;
  int64_t max_numbered_ = 0;
  RewrittenSql result_;
  absl::flat_hash_map<std::string, size_t> numbers_;
};

}  // namespace

absl::StatusOr<RewrittenSql> RewriteNamedParameters(absl::string_view sql) {
  Rewriter first(sql, /*named=*/true, /*collapse_percent=*/false);
  absl::StatusOr<RewrittenSql> rewritten = first.Run();
  if (!rewritten.ok() || !first.pyformat()) return rewritten;
  // psycopg2's rules: once the SQL holds %(name)s, %% stands for %.
  return Rewriter(sql, /*named=*/true, /*collapse_percent=*/true).Run();
}

int64_t HighestPlaceholder(absl::string_view sql) {
  Rewriter scan(sql, /*named=*/false, /*collapse_percent=*/false);
  scan.Run().IgnoreError();
  return scan.max_numbered();
}

namespace {

// Built-in types by OID (pg_type.dat), with their array types. Others
// (enums, extension types, rarer built-ins) are looked up on the server.
struct BuiltinType {
  Oid oid;
  Oid array_oid;  // 0: none
  const char* name;
};

constexpr BuiltinType kBuiltinTypes[] = {
    {16, 1000, "bool"},        {17, 1001, "bytea"},
    {18, 1002, "char"},        {19, 1003, "name"},
    {20, 1016, "int8"},        {21, 1005, "int2"},
    {23, 1007, "int4"},        {24, 1008, "regproc"},
    {25, 1009, "text"},        {26, 1028, "oid"},
    {27, 1010, "tid"},         {28, 1011, "xid"},
    {29, 1012, "cid"},         {114, 199, "json"},
    {142, 143, "xml"},         {600, 1017, "point"},
    {601, 1018, "lseg"},       {602, 1019, "path"},
    {603, 1020, "box"},        {604, 1027, "polygon"},
    {628, 629, "line"},        {650, 651, "cidr"},
    {700, 1021, "float4"},     {701, 1022, "float8"},
    {705, 0, "unknown"},       {718, 719, "circle"},
    {774, 775, "macaddr8"},    {790, 791, "money"},
    {829, 1040, "macaddr"},    {869, 1041, "inet"},
    {1042, 1014, "bpchar"},    {1043, 1015, "varchar"},
    {1082, 1182, "date"},      {1083, 1183, "time"},
    {1114, 1115, "timestamp"}, {1184, 1185, "timestamptz"},
    {1186, 1187, "interval"},  {1266, 1270, "timetz"},
    {1560, 1561, "bit"},       {1562, 1563, "varbit"},
    {1700, 1231, "numeric"},   {1790, 2201, "refcursor"},
    {2205, 2210, "regclass"},  {2206, 2211, "regtype"},
    {2249, 2287, "record"},    {2278, 0, "void"},
    {2950, 2951, "uuid"},      {3220, 3221, "pg_lsn"},
    {3614, 3643, "tsvector"},  {3615, 3645, "tsquery"},
    {3802, 3807, "jsonb"},     {3904, 3905, "int4range"},
    {3906, 3907, "numrange"},  {3908, 3909, "tsrange"},
    {3910, 3911, "tstzrange"}, {3912, 3913, "daterange"},
    {3926, 3927, "int8range"}, {4072, 4073, "jsonpath"},
    {5069, 271, "xid8"},
};

const absl::flat_hash_map<Oid, std::string>& BuiltinTypeNames() {
  static const auto* names = [] {
    auto* map = new absl::flat_hash_map<Oid, std::string>();
    for (const BuiltinType& type : kBuiltinTypes) {
      (*map)[type.oid] = type.name;
      if (type.array_oid != 0) {
        (*map)[type.array_oid] = absl::StrCat(type.name, "[]");
      }
    }
    return map;
  }();
  return *names;
}

}  // namespace

std::string BuiltinTypeName(uint32_t oid) {
  const auto& names = BuiltinTypeNames();
  auto it = names.find(oid);
  return it == names.end() ? std::string() : it->second;
}

}  // namespace postgres_internal

namespace {

using postgres_internal::BuiltinTypeName;

// Type OIDs whose text form becomes something other than text.
constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt2Oid = 21;
constexpr Oid kInt4Oid = 23;
constexpr Oid kOidOid = 26;
constexpr Oid kFloat4Oid = 700;
constexpr Oid kFloat8Oid = 701;

// How long a waiting thread lets a cancelled statement run before sending
// PQcancel again, and how often it looks.
constexpr absl::Duration kCancelResend = absl::Seconds(1);
constexpr absl::Duration kPollSlice = absl::Milliseconds(50);
// How long a cursor abandoned mid-result may take to cancel and drain before
// its backend is closed instead.
constexpr absl::Duration kDrainTimeout = absl::Seconds(5);

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PgCancelDeleter {
  void operator()(PGcancel* cancel) const { PQfreeCancel(cancel); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using ResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

// ---------------------------------------------------------------------------
// Messages and errors

// libpq's messages end in newlines and spread over lines ("\n\tIs the server
// running ..."): one line reads better in a status. The password is scrubbed
// for good measure, though libpq never echoes it.
std::string OneLine(absl::string_view raw, const std::string& password) {
  std::string text = absl::StrReplaceAll(absl::StripAsciiWhitespace(raw),
                                         {{"\n\t", " "}, {"\n", "; "}});
  if (password.size() >= 4) {
    absl::StrReplaceAll({{password, "***"}}, &text);
  }
  return text;
}

// What a SQLSTATE means for the broker (database.h lists the codes).
absl::StatusCode CodeOfSqlState(absl::string_view state, bool connection_bad) {
  if (state.size() != 5) return absl::StatusCode::kUnavailable;
  const absl::string_view kind = state.substr(0, 2);
  if (state == "57014") return absl::StatusCode::kCancelled;
  if (kind == "08") {
    // 08P01 is also how the server refuses a bind with the wrong number of
    // parameters: the statement's fault while the link is fine.
    if (state == "08P01" && !connection_bad) {
      return absl::StatusCode::kInvalidArgument;
    }
    return absl::StatusCode::kUnavailable;
  }
  // Operator intervention (admin or crash shutdown, cannot connect now),
  // insufficient resources, system errors.
  if (kind == "57" || kind == "53" || kind == "58") {
    return absl::StatusCode::kUnavailable;
  }
  // Serialization failure, deadlock, lock_timeout / NOWAIT.
  if (kind == "40" || state == "55P03") return absl::StatusCode::kAborted;
  if (kind == "28" || state == "42501") {
    return absl::StatusCode::kPermissionDenied;
  }
  if (kind == "XX") return absl::StatusCode::kInternal;  // a server bug
  if (connection_bad) return absl::StatusCode::kUnavailable;
  return absl::StatusCode::kInvalidArgument;
}

// The status of a failed `result` (null: the connection failed with no
// result). Sets *broken when the backend must not be reused: the link is
// gone, or libpq failed without the server's word (no SQLSTATE).
absl::Status ResultError(PGconn* conn, const PGresult* result, bool* broken) {
  const char* field = result == nullptr
                          ? nullptr
                          : PQresultErrorField(result, PG_DIAG_SQLSTATE);
  const std::string state = field == nullptr ? "" : field;
  // The server's message keeps its lines: "LINE 1: ..." and the caret under
  // the error's position only make sense that way.
  std::string message(absl::StripTrailingAsciiWhitespace(
      result == nullptr ? "" : PQresultErrorMessage(result)));
  if (message.empty()) message = OneLine(PQerrorMessage(conn), "");
  if (message.empty()) message = "PostgreSQL failed without a message";
  const bool connection_bad = PQstatus(conn) != CONNECTION_OK;
  const absl::StatusCode code = CodeOfSqlState(state, connection_bad);
  // Connection exceptions and shutdowns end the session even when libpq has
  // not noticed yet; so does a failure libpq reports without the server.
  *broken = connection_bad || state.empty() ||
            (code == absl::StatusCode::kUnavailable &&
             (absl::StartsWith(state, "08") || absl::StartsWith(state, "57")));
  return WithSqlState(absl::Status(code, message), state);
}

absl::Status CancelledStatus() {
  return WithSqlState(absl::CancelledError("query cancelled"), "57014");
}

absl::Status CopyUnsupported() {
  return absl::InvalidArgumentError(
      "COPY ... FROM STDIN / TO STDOUT is not supported through connbroker; "
      "use INSERT, or COPY to and from a server-side file");
}

// ---------------------------------------------------------------------------
// Backends

// The statements one backend has prepared (as cb_<pid>_1, ...), keyed by
// their final SQL text and parameter type OIDs (the types are part of a
// prepared statement: the same text with an int8 where an int4 was is
// another statement). Least recently used out first.
class StatementCache {
 public:
  // Enough for the statements an application repeats; each holds a plan in
  // the backend's memory.
  static constexpr size_t kCapacity = 64;

  // The name `key` is prepared under (null: it is not); marks it used.
  const std::string* Find(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return &it->second->name;
  }

  // Whether `key` ran recently; remembers that it ran. Only hashes, and
  // all forgotten at kSeenLimit, so one-off statements (literals in the
  // text) cannot fill memory; forgetting one only delays its prepare by a
  // run, and a hash collision only prepares a statement on its first run.
  bool SeenBefore(const std::string& key) {
    if (seen_.size() >= kSeenLimit) seen_.clear();
    return !seen_.insert(absl::Hash<std::string>{}(key)).second;
  }

  // Evicts least recently used statements until one more fits; their names
  // become stale (TakeStale).
  void MakeRoom() {
    while (order_.size() >= kCapacity) {
      index_.erase(order_.back().key);
      stale_.push_back(std::move(order_.back().name));
      order_.pop_back();
    }
  }

  // Names are never reused, so a statement the cache lost track of cannot
  // collide with a new one. The session's server PID in them keeps other
  // sessions' names apart should a transaction-mode pooler (PgBouncer)
  // hand this session's statements to another server connection: a wrong
  // statement would run under a shared name; a missing one only fails.
  void SetSession(int pid) { prefix_ = absl::StrCat("cb_", pid, "_"); }
  std::string NextName() { return absl::StrCat(prefix_, ++counter_); }

  const std::string& Add(std::string key, std::string name) {
    MakeRoom();
    order_.push_front(Entry{std::move(key), std::move(name)});
    index_[order_.front().key] = order_.begin();
    return order_.front().name;
  }

  // Forgets `key`, whose name becomes stale.
  void Drop(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    const auto node = it->second;
    index_.erase(it);
    stale_.push_back(std::move(node->name));
    order_.erase(node);
  }

  // Forgets everything, stale names too: the session's prepared statements
  // are gone.
  void Clear() {
    index_.clear();
    order_.clear();
    stale_.clear();
  }

  // Names evicted or dropped but still prepared on the server.
  std::vector<std::string> TakeStale() { return std::exchange(stale_, {}); }

 private:
  struct Entry {
    std::string key;
    std::string name;
  };
  std::list<Entry> order_;  // most recently used first
  // Views of the keys in order_ (list nodes do not move).
  absl::flat_hash_map<absl::string_view, std::list<Entry>::iterator> index_;
  static constexpr size_t kSeenLimit = 4096;
  absl::flat_hash_set<size_t> seen_;
  std::string prefix_ = "cb_";
  int64_t counter_ = 0;
  std::vector<std::string> stale_;
};

// One open PGconn. Owned by the pool and used by one thread at a time; only
// `cancel` is used from other threads (PQcancel is thread-safe).
struct PgBackend {
  std::unique_ptr<PGconn, PgConnDeleter> conn;
  std::unique_ptr<PGcancel, PgCancelDeleter> cancel;
  // Names of type OIDs that are not built in (enums, extension types),
  // looked up on this server once.
  absl::flat_hash_map<Oid, std::string> type_names;
  // Prepared statements of this session, for statements that repeat.
  StatementCache statements;
  // Bounds the pool's own round trips (ping, ROLLBACK), which no client
  // deadline covers.
  absl::Duration io_timeout = absl::Seconds(10);
};

using Pool = BackendPool<PgBackend>;
using Lease = Pool::Lease;

void SendCancelRequest(PGcancel* cancel) {
  char error[256];
  // Failure (server gone) needs no action: the statement's wait finds out.
  PQcancel(cancel, error, sizeof(error));
}

// The interrupter a CancelSignal runs for a statement on `backend`: nothing
// but the signal's own flag. The thread waiting for the statement sees the
// flag within kPollSlice and sends PQcancel itself. Sending it from the
// interrupter would block whoever cancels -- under the signal's lock, often
// a gRPC reactor thread -- for as long as the server takes to accept a
// connection, which is unbounded when it drops packets.
std::function<void()> CancelInterrupter(PgBackend&) {
  return [] {};
}

// Waits for and reads the results of the statement in flight on one backend.
class Exchange {
 public:
  Exchange(PgBackend* backend, CancelSignal* cancel)
      : backend_(backend), cancel_(cancel) {}

  bool cancelled() const { return cancel_ != nullptr && cancel_->cancelled(); }

  // Sends a cancel request from this thread.
  void SendCancel() {
    SendCancelRequest(backend_->cancel.get());
    resend_at_ = absl::Now() + kCancelResend;
  }

  // The next result of the statement, or null once it is over. When
  // `deadline` passes first: null with *timed_out set.
  ResultPtr Next(absl::Time deadline = absl::InfiniteFuture(),
                 bool* timed_out = nullptr) {
    PGconn* conn = backend_->conn.get();
    while (PQisBusy(conn)) {
      const absl::Time now = absl::Now();
      if (now >= deadline) {
        if (timed_out != nullptr) *timed_out = true;
        return nullptr;
      }
      if (cancelled()) {
        // The interrupter sent the first request; a second one follows if
        // the statement outlives it (it may have reached the server first).
        // The first request goes now; another follows if the statement
        // outlives it (a request that reaches the server before the
        // statement starts is dropped there).
        if (now >= resend_at_) SendCancel();
      }
      const int fd = PQsocket(conn);
      if (fd < 0) break;  // PQgetResult reports the lost connection
      const absl::Duration wait = std::min(deadline - now, kPollSlice);
      pollfd poll_fd{fd, POLLIN, 0};
      const int ready = poll(&poll_fd, 1,
                             static_cast<int>(std::max<int64_t>(
                                 1, absl::ToInt64Milliseconds(wait))));
      if (ready < 0 && errno != EINTR) break;
      if (ready > 0 && PQconsumeInput(conn) == 0) break;
    }
    return ResultPtr(PQgetResult(conn));
  }

  // Reads and drops what is left of the statement. False when `deadline`
  // passed first or the statement entered COPY: the backend cannot be
  // reused then.
  bool Drain(absl::Time deadline) {
    while (true) {
      bool timed_out = false;
      ResultPtr result = Next(deadline, &timed_out);
      if (timed_out) return false;
      if (result == nullptr) return true;
      switch (PQresultStatus(result.get())) {
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
          return false;
        default:
          break;
      }
    }
  }

 private:
  PgBackend* const backend_;
  CancelSignal* const cancel_;
  absl::Time resend_at_ = absl::InfinitePast();
};

// Runs a statement of the driver's own (ROLLBACK, a ping, a catalog lookup)
// within `timeout`. Returns its last result's rows, if any.
absl::StatusOr<ResultPtr> RunOwn(PgBackend& backend, const char* sql,
                                 const std::vector<std::string>& params,
                                 absl::Duration timeout) {
  PGconn* conn = backend.conn.get();
  std::vector<const char*> values;
  for (const std::string& param : params) values.push_back(param.c_str());
  const int sent =
      params.empty()
          ? PQsendQuery(conn, sql)
          : PQsendQueryParams(conn, sql, static_cast<int>(values.size()),
                              nullptr, values.data(), nullptr, nullptr, 0);
  if (sent == 0) {
    return absl::UnavailableError(OneLine(PQerrorMessage(conn), ""));
  }
  Exchange exchange(&backend, nullptr);
  const absl::Time deadline = absl::Now() + timeout;
  ResultPtr last;
  absl::Status failure;
  while (true) {
    bool timed_out = false;
    ResultPtr result = exchange.Next(deadline, &timed_out);
    if (timed_out) {
      return absl::UnavailableError(absl::StrCat(
          "no answer from PostgreSQL within ", absl::FormatDuration(timeout)));
    }
    if (result == nullptr) break;
    switch (PQresultStatus(result.get())) {
      case PGRES_TUPLES_OK:
      case PGRES_COMMAND_OK:
      case PGRES_EMPTY_QUERY:
        last = std::move(result);
        break;
      case PGRES_COPY_IN:
      case PGRES_COPY_OUT:
      case PGRES_COPY_BOTH:
        return CopyUnsupported();
      default:
        if (failure.ok()) {
          bool broken = false;
          failure = ResultError(conn, result.get(), &broken);
        }
        break;
    }
  }
  if (!failure.ok()) return failure;
  return last;
}

struct ConnectConfig {
  std::string name;  // the connection's, for messages
  // Keyword/value pairs for PQconnectdbParams.
  std::vector<std::pair<std::string, std::string>> params;
  std::string password;  // only to scrub it from messages
  absl::Duration io_timeout;
};

// libpq options a URL's query may carry. Anything else (SQLAlchemy's own
// options, psycopg2's) is ignored: never handed to libpq, which would refuse
// unknown keywords, and some keywords (service, passfile) would read files
// the daemon's operator did not mean to expose.
constexpr const char* kAllowedOptions[] = {
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "options",
    "target_session_attrs",
    "keepalives",
    "keepalives_idle",
    "gssencmode",
    "channel_binding",
};

ConnectConfig BuildConnectConfig(const config::ConnectionSpec& spec) {
  const config::SqlTarget& target = spec.sql;
  auto option = [&](const std::string& key) -> const std::string* {
    auto it = target.query.find(key);
    return it == target.query.end() ? nullptr : &it->second;
  };
  ConnectConfig config;
  config.name = spec.name;
  config.password = target.password;
  auto& params = config.params;

  // SQLAlchemy spells a Unix socket directory as ?host=/run/postgresql (the
  // URL's host part cannot hold a path); libpq takes it as host.
  const std::string* host = option("host");
  if (host != nullptr) {
    params.emplace_back("host", *host);
  } else if (!target.host.empty()) {
    params.emplace_back("host", target.host);
  }
  if (target.port.has_value()) {
    params.emplace_back("port", absl::StrCat(*target.port));
  } else if (const std::string* port = option("port")) {
    params.emplace_back("port", *port);
  }
  if (!target.database.empty()) params.emplace_back("dbname", target.database);
  if (!target.username.empty()) params.emplace_back("user", target.username);
  if (!target.password.empty()) {
    params.emplace_back("password", target.password);
  }

  const absl::Duration timeout = spec.pool.connect_timeout;
  int64_t timeout_seconds = 0;  // libpq: wait forever
  if (timeout != absl::InfiniteDuration()) {
    timeout_seconds = std::max<int64_t>(
        1, absl::ToInt64Seconds(absl::Ceil(timeout, absl::Seconds(1))));
  }
  if (const std::string* value = option("connect_timeout")) {
    int64_t parsed = 0;
    if (absl::SimpleAtoi(*value, &parsed) && parsed >= 0) {
      timeout_seconds = parsed;
    }
  }
  params.emplace_back("connect_timeout", absl::StrCat(timeout_seconds));
  config.io_timeout =
      timeout_seconds > 0 ? absl::Seconds(timeout_seconds) : absl::Seconds(30);

  const std::string* application = option("application_name");
  params.emplace_back("application_name",
                      application != nullptr ? *application : "connbroker");
  // Text from the server must be UTF-8: protobuf strings require it.
  params.emplace_back("client_encoding", "UTF8");
  for (const char* key : kAllowedOptions) {
    if (const std::string* value = option(key)) {
      params.emplace_back(key, *value);
    }
  }
  return config;
}

bool ContainsAny(absl::string_view text,
                 std::initializer_list<absl::string_view> needles) {
  for (absl::string_view needle : needles) {
    if (absl::StrContains(text, needle)) return true;
  }
  return false;
}

// Why a connection attempt failed, as a status: refused credentials are
// PERMISSION_DENIED and a database that does not exist FAILED_PRECONDITION
// (retrying will not help either), anything else UNAVAILABLE.
// libpq offers no SQLSTATE before a session exists, so the server's (English)
// message decides.
absl::Status ConnectError(const ConnectConfig& config, absl::string_view raw) {
  const std::string message = OneLine(raw, config.password);
  const std::string text = absl::StrCat("cannot connect to PostgreSQL for ",
                                        config.name, ": ", message);
  if (absl::StrContains(message, "password authentication failed")) {
    return WithSqlState(absl::PermissionDeniedError(text), "28P01");
  }
  if (ContainsAny(message, {"authentication failed", "no pg_hba.conf entry",
                            "no password supplied", "password is missing"}) ||
      (absl::StrContains(message, "role \"") &&
       absl::StrContains(message, "\" does not exist"))) {
    return WithSqlState(absl::PermissionDeniedError(text), "28000");
  }
  if (absl::StrContains(message, "database \"") &&
      absl::StrContains(message, "\" does not exist")) {
    return WithSqlState(absl::FailedPreconditionError(text), "3D000");
  }
  return absl::UnavailableError(text);
}

void IgnoreNotice(void* /*arg*/, const char* /*message*/) {}

absl::StatusOr<std::unique_ptr<PgBackend>> Connect(
    const ConnectConfig& config) {
  std::vector<const char*> keys;
  std::vector<const char*> values;
  for (const auto& [key, value] : config.params) {
    keys.push_back(key.c_str());
    values.push_back(value.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  auto backend = std::make_unique<PgBackend>();
  backend->io_timeout = config.io_timeout;
  // expand_dbname=0: a database name is only a name, never a conninfo string
  // that could point somewhere else.
  backend->conn.reset(
      PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/0));
  PGconn* conn = backend->conn.get();
  if (conn == nullptr) {
    return absl::ResourceExhaustedError(
        "libpq could not allocate a connection");
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    return ConnectError(config, PQerrorMessage(conn));
  }
  // libpq prints NOTICEs and WARNINGs to stderr by default; a daemon has no
  // use for them there.
  PQsetNoticeProcessor(conn, &IgnoreNotice, nullptr);
  backend->statements.SetSession(PQbackendPID(conn));
  backend->cancel.reset(PQgetCancel(conn));
  if (backend->cancel == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to PostgreSQL for ", config.name,
                     ": libpq gave no cancel handle"));
  }
  if (PQserverVersion(conn) < 120000) {
    // Before 12 the default float output rounds to 15 digits; 3 extra give
    // a float8 back exactly. Later servers print the shortest exact form.
    absl::StatusOr<ResultPtr> set =
        RunOwn(*backend, "SET extra_float_digits = 3", {}, config.io_timeout);
    if (!set.ok()) {
      return absl::UnavailableError(
          absl::StrCat("cannot set up PostgreSQL session for ", config.name,
                       ": ", set.status().message()));
    }
  }
  return backend;
}

// Runs as a backend goes back to the pool: the next user must not inherit a
// transaction (BEGIN through Query, a failed statement inside one).
bool RecycleBackend(PgBackend& backend) {
  PGconn* conn = backend.conn.get();
  if (PQstatus(conn) != CONNECTION_OK) return false;
  switch (PQtransactionStatus(conn)) {
    case PQTRANS_IDLE:
      return true;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
      return RunOwn(backend, "ROLLBACK", {}, backend.io_timeout).ok();
    default:  // a command still running (or unknown state): close it
      return false;
  }
}

bool PingBackend(PgBackend& backend) {
  // An empty query is a full round trip that the server does not parse.
  return RunOwn(backend, "", {}, backend.io_timeout).ok() &&
         PQstatus(backend.conn.get()) == CONNECTION_OK;
}

// ---------------------------------------------------------------------------
// Parameters

// A statement ready for PQsendQueryParams: parameters in the server's text
// form (binary for bytea), with their types.
struct BoundStatement {
  std::string sql;
  bool has_params = false;  // one statement, the extended protocol
  std::vector<std::string> storage;
  std::vector<Oid> types;
  std::vector<int> formats;
  std::vector<bool> is_null;
};

std::string DoubleText(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char buffer[32];
  // 17 significant digits read back as the same double.
  std::snprintf(buffer, sizeof(buffer), "%.17g", value);
  return buffer;
}

// Each value is typed as the literal a Python driver would inline: an int
// that fits int4 is int4 (so f(int4) resolves), a bigger one int8; a float is
// float8; text has no type (unknown), so the server reads it as whatever the
// context wants ('2024-01-31' into a date).
absl::Status AddValue(const v1::Value& value, int index, BoundStatement* out) {
  std::string text;
  Oid type = 0;
  int format = 0;
  bool is_null = false;
  switch (value.kind_case()) {
    case v1::Value::kBoolValue:
      text = value.bool_value() ? "true" : "false";
      type = kBoolOid;
      break;
    case v1::Value::kInt64Value: {
      const int64_t v = value.int64_value();
      text = absl::StrCat(v);
      type = v >= std::numeric_limits<int32_t>::min() &&
                     v <= std::numeric_limits<int32_t>::max()
                 ? kInt4Oid
                 : kInt8Oid;
      break;
    }
    case v1::Value::kDoubleValue:
      text = DoubleText(value.double_value());
      type = kFloat8Oid;
      break;
    case v1::Value::kTextValue:
      // Text parameters travel NUL-terminated: a NUL would cut the value
      // short without a word (and PostgreSQL text cannot hold one anyway).
      if (value.text_value().find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameter ", index,
            ": text holds a NUL byte, which PostgreSQL text cannot store "
            "(send it as a blob for bytea)"));
      }
      text = value.text_value();
      break;
    case v1::Value::kBlobValue:
      text = value.blob_value();
      type = kByteaOid;
      format = 1;  // binary: the bytes as they are
      break;
    case v1::Value::kNullValue:
    case v1::Value::KIND_NOT_SET:
      is_null = true;
      break;
  }
  if (text.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter ", index, " is too large"));
  }
  out->storage.push_back(std::move(text));
  out->types.push_back(type);
  out->formats.push_back(format);
  out->is_null.push_back(is_null);
  return absl::OkStatus();
}

absl::StatusOr<BoundStatement> Bind(const std::string& sql,
                                    const v1::Params& params) {
  if (sql.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("the SQL text holds a NUL byte");
  }
  const bool positional = params.positional_size() > 0;
  const bool named = !params.named().empty();
  if (positional && named) {
    return absl::InvalidArgumentError(
        "give positional or named parameters, not both");
  }
  BoundStatement out;
  out.has_params = positional || named;
  if (named) {
    absl::StatusOr<postgres_internal::RewrittenSql> rewritten =
        postgres_internal::RewriteNamedParameters(sql);
    if (!rewritten.ok()) return rewritten.status();
    out.sql = std::move(rewritten->sql);
    int index = 0;
    for (const std::string& name : rewritten->names) {
      ++index;
      auto it = params.named().find(name);
      if (it == params.named().end()) it = params.named().find(":" + name);
      if (it == params.named().end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("no value for parameter :", name));
      }
      absl::Status added = AddValue(it->second, index, &out);
      if (!added.ok()) return added;
    }
  } else {
    out.sql = sql;
    if (positional) {
      // The server would ignore values past the highest $n without a word
      // (their types make the statement take them), and say little about
      // missing ones.
      const int64_t wanted = postgres_internal::HighestPlaceholder(sql);
      if (wanted != params.positional_size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("the statement has ", wanted, " positional parameter",
                         wanted == 1 ? "" : "s", " ($1..$n), ",
                         params.positional_size(), " given"));
      }
    }
    for (int i = 0; i < params.positional_size(); ++i) {
      absl::Status added = AddValue(params.positional(i), i + 1, &out);
      if (!added.ok()) return added;
    }
  }
  if (out.storage.size() > 65535) {
    return absl::InvalidArgumentError(
        "PostgreSQL takes at most 65535 parameters per statement");
  }
  return out;
}

// Whether a prepared statement pays for `sql`: a statement the server plans,
// where it saves parsing and planning. Utility statements (SET, BEGIN, DDL)
// have no plan to keep.
bool WorthPreparing(absl::string_view sql) {
  const absl::string_view word =
      LeadingKeyword(sql, SqlComments{.nested_blocks = true});
  for (absl::string_view planned : {"select", "insert", "update", "delete",
                                    "with", "values", "table", "merge"}) {
    if (absl::EqualsIgnoreCase(word, planned)) return true;
  }
  return false;
}

std::string CacheKey(const BoundStatement& statement) {
  std::string key = statement.sql;
  key.push_back('\0');  // the SQL holds no NUL (Bind refuses it)
  for (Oid type : statement.types) absl::StrAppend(&key, type, ",");
  return key;
}

// Runs one step of the driver's own that belongs to a caller's statement (a
// PREPARE, a DEALLOCATE): unlike RunOwn, it answers the caller's
// CancelSignal. Sets *broken as ResultError does.
absl::Status RunStep(PgBackend& backend, CancelSignal* cancel,
                     const std::function<int(PGconn*)>& send, bool* broken) {
  PGconn* conn = backend.conn.get();
  if (send(conn) == 0) return ResultError(conn, nullptr, broken);
  Exchange exchange(&backend, cancel);
  absl::Status failure;
  {
    ScopedInterrupt armed(cancel, CancelInterrupter(backend));
    if (!armed.ok()) exchange.SendCancel();
    while (ResultPtr result = exchange.Next()) {
      if (PQresultStatus(result.get()) != PGRES_COMMAND_OK && failure.ok()) {
        failure = ResultError(conn, result.get(), broken);
      }
    }
  }
  if (failure.code() == absl::StatusCode::kCancelled ||
      (!failure.ok() && exchange.cancelled())) {
    return CancelledStatus();
  }
  return failure;
}

// Prepares `statement` on `backend` under a fresh name and caches it.
// Deallocates first what the cache evicted, so the session holds at most
// kCapacity statements; but only outside a transaction, which a DEALLOCATE
// of a statement the user dropped already would abort.
absl::StatusOr<const std::string*> Prepare(PgBackend& backend, std::string key,
                                           const BoundStatement& statement,
                                           CancelSignal* cancel, bool* broken) {
  StatementCache& cache = backend.statements;
  PGconn* conn = backend.conn.get();
  cache.MakeRoom();
  if (PQtransactionStatus(conn) == PQTRANS_IDLE) {
    for (const std::string& stale : cache.TakeStale()) {
      const std::string sql = absl::StrCat("DEALLOCATE ", stale);
      absl::Status dropped = RunStep(
          backend, cancel,
          [&](PGconn* c) { return PQsendQuery(c, sql.c_str()); }, broken);
      // A statement already gone (26000) is what was wanted.
      if (*broken || dropped.code() == absl::StatusCode::kCancelled) {
        return dropped;
      }
    }
  }
  std::string name = cache.NextName();
  const int count = static_cast<int>(statement.types.size());
  absl::Status prepared = RunStep(
      backend, cancel,
      [&](PGconn* c) {
        return PQsendPrepare(c, name.c_str(), statement.sql.c_str(), count,
                             count > 0 ? statement.types.data() : nullptr);
      },
      broken);
  // Errors in the SQL show here, as they would have running it unprepared.
  if (!prepared.ok()) return prepared;
  const std::string* cached = &cache.Add(std::move(key), std::move(name));
  if (cancel != nullptr && cancel->cancelled()) return CancelledStatus();
  return cached;
}

// Sends `statement` on `backend` in single-row mode: a script (Execute
// without parameters) by the simple protocol; one statement as a prepared
// statement from the backend's cache when it repeats, else unnamed. Sets
// *prepared_key to the cache key when it went out prepared, and *broken
// when the backend must not be reused.
absl::Status Send(PgBackend& backend, const BoundStatement& statement,
                  bool allow_script, CancelSignal* cancel,
                  std::string* prepared_key, bool* broken) {
  PGconn* conn = backend.conn.get();
  prepared_key->clear();
  int sent;
  if (allow_script && !statement.has_params) {
    sent = PQsendQuery(conn, statement.sql.c_str());
  } else {
    // Pointers into `statement`, taken here where it no longer moves.
    const int count = static_cast<int>(statement.storage.size());
    std::vector<const char*> values;
    std::vector<int> lengths;
    for (int i = 0; i < count; ++i) {
      values.push_back(statement.is_null[i] ? nullptr
                                            : statement.storage[i].c_str());
      lengths.push_back(static_cast<int>(statement.storage[i].size()));
    }
    const std::string* name = nullptr;
    std::string key;
    if (WorthPreparing(statement.sql)) {
      key = CacheKey(statement);
      name = backend.statements.Find(key);
      // Prepared on the second run: a one-off statement would pay a round
      // trip for the PREPARE and gain nothing.
      if (name == nullptr && backend.statements.SeenBefore(key)) {
        absl::StatusOr<const std::string*> prepared =
            Prepare(backend, key, statement, cancel, broken);
        if (!prepared.ok()) return prepared.status();
        name = *prepared;
      }
    }
    if (name != nullptr) {
      *prepared_key = std::move(key);
      sent = PQsendQueryPrepared(
          conn, name->c_str(), count, count > 0 ? values.data() : nullptr,
          count > 0 ? lengths.data() : nullptr,
          count > 0 ? statement.formats.data() : nullptr, /*resultFormat=*/0);
    } else {
      sent = PQsendQueryParams(conn, statement.sql.c_str(), count,
                               count > 0 ? statement.types.data() : nullptr,
                               count > 0 ? values.data() : nullptr,
                               count > 0 ? lengths.data() : nullptr,
                               count > 0 ? statement.formats.data() : nullptr,
                               /*resultFormat=*/0);
    }
  }
  if (sent == 0) return ResultError(conn, nullptr, broken);
  // Rows arrive one PGresult each instead of the whole result at once.
  PQsetSingleRowMode(conn);
  return absl::OkStatus();
}

// A statement that went out as cached statement `key` (empty: it did not)
// failed at once with `result`: fixes the cache when that is why. True when
// running the statement again may succeed.
bool RecoverStaleStatement(PgBackend& backend, const std::string& key,
                           const PGresult* result) {
  if (key.empty()) return false;
  const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  if (state == nullptr) return false;
  if (absl::string_view(state) == "26000") {
    // invalid_sql_statement_name: the session's prepared statements were
    // dropped behind the cache's back (DEALLOCATE ALL inside a function).
    backend.statements.Clear();
    return true;
  }
  if (absl::string_view(state) == "0A000") {
    // "cached plan must not change result type": a table changed under
    // the statement.
    backend.statements.Drop(key);
    return true;
  }
  return false;
}

// Called with each command's result: DEALLOCATE ALL and DISCARD ALL drop
// the cache's statements with the user's.
void NoteCommand(PgBackend& backend, PGresult* result) {
  const absl::string_view tag = PQcmdStatus(result);
  if (tag == "DEALLOCATE ALL" || tag == "DISCARD ALL") {
    backend.statements.Clear();
  }
}

// ---------------------------------------------------------------------------
// Values

enum class Decode { kBool, kInt, kFloat, kBytea, kText };

Decode DecodeOf(Oid type) {
  switch (type) {
    case kBoolOid:
      return Decode::kBool;
    case kInt2Oid:
    case kInt4Oid:
    case kInt8Oid:
    case kOidOid:
      return Decode::kInt;
    case kFloat4Oid:
    case kFloat8Oid:
      return Decode::kFloat;
    case kByteaOid:
      return Decode::kBytea;
    default:
      // numeric and money stay text: exact, as the server printed them.
      return Decode::kText;
  }
}

bool ParseFloat(absl::string_view text, double* value) {
  if (text == "Infinity") {
    *value = std::numeric_limits<double>::infinity();
  } else if (text == "-Infinity") {
    *value = -std::numeric_limits<double>::infinity();
  } else if (text == "NaN") {
    *value = std::numeric_limits<double>::quiet_NaN();
  } else {
    return absl::SimpleAtod(text, value);
  }
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// bytea's text form: "\x" and hex digits (bytea_output = hex, the default),
// else the old escape format, which libpq decodes.
bool DecodeBytea(absl::string_view text, std::string* bytes) {
  bytes->clear();
  if (absl::StartsWith(text, "\\x")) {
    text.remove_prefix(2);
    if (text.size() % 2 != 0) return false;
    bytes->resize(text.size() / 2);
    for (size_t i = 0; i < bytes->size(); ++i) {
      const int high = HexValue(text[2 * i]);
      const int low = HexValue(text[2 * i + 1]);
      if (high < 0 || low < 0) return false;
      (*bytes)[i] = static_cast<char>(high << 4 | low);
    }
    return true;
  }
  std::string terminated(text);
  size_t length = 0;
  unsigned char* raw = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(terminated.c_str()), &length);
  if (raw == nullptr) return false;
  bytes->assign(reinterpret_cast<const char*>(raw), length);
  PQfreemem(raw);
  return true;
}

// ---------------------------------------------------------------------------
// Cursor

class PgCursor : public ResultCursor {
 public:
  // Owns `owned` when `borrowed` is null; else runs on *borrowed (a pinned
  // backend's lease, which outlives the cursor and stays pinned when the
  // result ends).
  PgCursor(Lease owned, Lease* borrowed, CancelSignal* cancel)
      : backend_((borrowed != nullptr ? *borrowed : owned).get()),
        cancel_(cancel),
        exchange_(backend_, cancel),
        owned_(std::move(owned)),
        lease_(borrowed != nullptr ? borrowed : &owned_) {}

  ~PgCursor() override {
    if (lease_ == nullptr) return;
    // Abandoned mid-result (the client went away): stop the statement and
    // read what is left, so the backend goes back clean; or close it when
    // that takes too long.
    if (!statement_over_) {
      exchange_.SendCancel();
      if (!exchange_.Drain(absl::Now() + kDrainTimeout)) lease_->MarkBroken();
    }
    Finish();
  }

  // Sends `statement` and waits for its first result: its columns, or its
  // error (the backend is then back in the pool).
  absl::Status Start(const BoundStatement& statement) {
    absl::Status started = StartImpl(statement);
    if (!started.ok()) Finish();
    return started;
  }

  const v1::Schema& schema() const override { return schema_; }

  absl::StatusOr<bool> Next(int max_rows, size_t max_bytes,
                            v1::RowBatch* batch) override {
    absl::StatusOr<bool> more = NextImpl(max_rows, max_bytes, batch);
    // Only here, with the interrupter disarmed: once back in the pool the
    // backend may run another caller's statement, which a late cancel of
    // this call must not reach.
    if (!more.ok() || !*more) Finish();
    return more;
  }

 private:
  absl::Status StartImpl(const BoundStatement& statement) {
    ResultPtr first;
    for (int attempt = 0;; ++attempt) {
      std::string prepared_key;
      bool broken = false;
      absl::Status sent = Send(*backend_, statement, /*allow_script=*/false,
                               cancel_, &prepared_key, &broken);
      if (!sent.ok()) return Fail(std::move(sent), broken);
      {
        ScopedInterrupt armed(cancel_, CancelInterrupter(*backend_));
        if (!armed.ok()) exchange_.SendCancel();
        first = exchange_.Next();
      }
      // A stale cached statement fails before it runs: once the cache is
      // fixed, running it again is safe. Never inside a transaction (a
      // session's), which the failure aborted.
      if (attempt == 0 && first != nullptr &&
          PQresultStatus(first.get()) == PGRES_FATAL_ERROR &&
          RecoverStaleStatement(*backend_, prepared_key, first.get()) &&
          !exchange_.cancelled() &&
          exchange_.Drain(absl::Now() + kDrainTimeout) &&
          PQtransactionStatus(backend_->conn.get()) == PQTRANS_IDLE) {
        continue;
      }
      break;
    }
    if (first == nullptr) {
      statement_over_ = true;
      return Fail(absl::UnavailableError("PostgreSQL sent no result"), true);
    }
    switch (PQresultStatus(first.get())) {
      case PGRES_SINGLE_TUPLE:
        Describe(first.get());
        pending_ = std::move(first);
        break;
      case PGRES_TUPLES_OK:
        Describe(first.get());
        return EndOfStatement();
      case PGRES_COMMAND_OK:
        NoteCommand(*backend_, first.get());
        return EndOfStatement();
      case PGRES_EMPTY_QUERY:
        return EndOfStatement();
      case PGRES_COPY_IN:
      case PGRES_COPY_OUT:
      case PGRES_COPY_BOTH:
        return Fail(CopyUnsupported(), /*broken=*/true);
      default:
        return FailWith(first.get());
    }
    if (exchange_.cancelled()) return Abort();
    return absl::OkStatus();
  }

  absl::StatusOr<bool> NextImpl(int max_rows, size_t max_bytes,
                                v1::RowBatch* batch) {
    // StartBatch empties a batch that goes on, keeping its vectors' memory.
    if (!failure_.ok() || exchange_.cancelled()) batch->Clear();
    if (!failure_.ok()) return failure_;
    if (exchange_.cancelled()) {
      if (lease_ != nullptr && !statement_over_) return Abort();
      return Fail(CancelledStatus(), /*broken=*/false);
    }
    const int columns = schema_.columns_size();
    std::vector<ColumnBuilder> builders = StartBatch(columns, batch);
    int rows = 0;
    bool more = false;
    if (lease_ != nullptr && !statement_over_) {
      absl::Status filled;
      {
        ScopedInterrupt armed(cancel_, CancelInterrupter(*backend_));
        if (!armed.ok()) {
          filled = CancelledStatus();  // Abort() sends the cancel request
        } else {
          filled = Fill(builders, max_rows, max_bytes, &rows, &more);
        }
      }
      if (!filled.ok()) {
        batch->Clear();
        if (failure_.ok()) {
          // Cancelled: stop the statement and read what is left.
          return Abort();
        }
        return failure_;
      }
    }
    batch->set_row_count(rows);
    for (ColumnBuilder& builder : builders) builder.Finish(rows);
    if (!settled_) {
      SettleSchema(builders, {}, &schema_);
      settled_ = true;
    }
    return more;
  }

  std::string TypeNameOf(Oid type) const {
    std::string name = BuiltinTypeName(type);
    if (!name.empty()) return name;
    auto it = backend_->type_names.find(type);
    return it == backend_->type_names.end() ? std::string() : it->second;
  }

  void Describe(const PGresult* result) {
    const int columns = PQnfields(result);
    for (int i = 0; i < columns; ++i) {
      v1::Column* column = schema_.add_columns();
      const char* name = PQfname(result, i);
      column->set_name(name == nullptr ? "" : name);
      const Oid type = PQftype(result, i);
      column->set_database_type(TypeNameOf(type));
      column->set_nullable(true);
      types_.push_back(type);
      decode_.push_back(DecodeOf(type));
    }
  }

  // Names the column types neither built in nor known to this backend yet,
  // with one catalog query; the connection must be idle (the statement
  // over). The schema takes them if no batch announced it yet; the backend
  // keeps them for later statements either way.
  void ResolveTypeNames() {
    std::vector<std::string> missing;
    for (int i = 0; i < schema_.columns_size(); ++i) {
      if (schema_.columns(i).database_type().empty() &&
          TypeNameOf(types_[i]).empty()) {
        missing.push_back(absl::StrCat(types_[i]));
      }
    }
    if (missing.empty()) return;
    absl::StatusOr<ResultPtr> found = RunOwn(
        *backend_,
        "SELECT t.oid, t.typname, e.typname FROM pg_catalog.pg_type t "
        "LEFT JOIN pg_catalog.pg_type e "
        "ON t.typcategory = 'A' AND t.typelem <> 0 AND e.oid = t.typelem "
        "WHERE t.oid = ANY($1::pg_catalog.oid[])",
        {absl::StrCat("{", absl::StrJoin(missing, ","), "}")},
        backend_->io_timeout);
    if (!found.ok() || *found == nullptr) {
      // Names are a courtesy; a lost connection shows on the next use.
      if (PQstatus(backend_->conn.get()) != CONNECTION_OK) {
        lease_->MarkBroken();
      }
      return;
    }
    const PGresult* result = found->get();
    for (int row = 0; row < PQntuples(result); ++row) {
      uint32_t oid = 0;
      if (!absl::SimpleAtoi(PQgetvalue(result, row, 0), &oid)) continue;
      std::string name = PQgetisnull(result, row, 2)
                             ? PQgetvalue(result, row, 1)
                             : absl::StrCat(PQgetvalue(result, row, 2), "[]");
      backend_->type_names[oid] = std::move(name);
    }
    if (settled_) return;
    for (int i = 0; i < schema_.columns_size(); ++i) {
      if (schema_.columns(i).database_type().empty()) {
        schema_.mutable_columns(i)->set_database_type(TypeNameOf(types_[i]));
      }
    }
  }

  // Appends the rows of the statement to `builders` until the batch is full
  // or the statement is over. Errors are recorded in failure_; a
  // cancellation is returned without, for Abort().
  absl::Status Fill(std::vector<ColumnBuilder>& builders, int max_rows,
                    size_t max_bytes, int* rows, bool* more) {
    size_t bytes = 0;
    while (true) {
      if (exchange_.cancelled()) return CancelledStatus();
      if (pending_ == nullptr) {
        ResultPtr result = exchange_.Next();
        if (result == nullptr) {
          statement_over_ = true;
          *more = false;
          return absl::OkStatus();
        }
        switch (PQresultStatus(result.get())) {
          case PGRES_SINGLE_TUPLE:
            pending_ = std::move(result);
            break;
          case PGRES_TUPLES_OK:
          case PGRES_COMMAND_OK:
          case PGRES_EMPTY_QUERY:
            *more = false;
            return EndOfStatement();
          case PGRES_COPY_IN:
          case PGRES_COPY_OUT:
          case PGRES_COPY_BOTH:
            return Fail(CopyUnsupported(), /*broken=*/true);
          default:
            return FailWith(result.get());
        }
      }
      // The row just read does not fit: it opens the next batch. Reading
      // one row ahead is how the last full batch can say "no more rows".
      if (*rows > 0 && ((max_rows > 0 && *rows >= max_rows) ||
                        (max_bytes > 0 && bytes >= max_bytes))) {
        *more = true;
        return absl::OkStatus();
      }
      bytes += AppendRow(pending_.get(), builders, *rows);
      pending_.reset();
      ++*rows;
    }
  }

  size_t AppendRow(const PGresult* result, std::vector<ColumnBuilder>& builders,
                   int row) {
    size_t bytes = 0;
    for (size_t i = 0; i < builders.size(); ++i) {
      const int col = static_cast<int>(i);
      ColumnBuilder& builder = builders[i];
      if (PQgetisnull(result, 0, col)) {
        bytes += builder.AppendNull(row);
        continue;
      }
      const absl::string_view text(PQgetvalue(result, 0, col),
                                   PQgetlength(result, 0, col));
      // A value that does not parse as its type says travels as text: odd,
      // but nothing is lost.
      switch (decode_[i]) {
        case Decode::kBool:
          bytes += builder.AppendBool(row, text == "t");
          break;
        case Decode::kInt: {
          int64_t value = 0;
          bytes += absl::SimpleAtoi(text, &value)
                       ? builder.AppendInt64(row, value)
                       : builder.AppendText(row, text);
          break;
        }
        case Decode::kFloat: {
          double value = 0;
          bytes += ParseFloat(text, &value) ? builder.AppendDouble(row, value)
                                            : builder.AppendText(row, text);
          break;
        }
        case Decode::kBytea:
          bytes += DecodeBytea(text, &scratch_)
                       ? builder.AppendBlob(row, scratch_)
                       : builder.AppendText(row, text);
          break;
        case Decode::kText:
          bytes += builder.AppendText(row, text);
          break;
      }
    }
    return bytes;
  }

  // The statement's last result came: reads on to its end (the null
  // result), which reports a late error if there is one.
  absl::Status EndOfStatement() {
    while (true) {
      ResultPtr result = exchange_.Next();
      if (result == nullptr) break;
      switch (PQresultStatus(result.get())) {
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
        case PGRES_SINGLE_TUPLE:
          break;  // not expected after the end; dropped
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
          return Fail(CopyUnsupported(), /*broken=*/true);
        default:
          return FailWith(result.get());
      }
    }
    statement_over_ = true;
    ResolveTypeNames();
    return absl::OkStatus();
  }

  // The statement failed with `result`: drain and record (the backend is
  // closed on return when broken).
  absl::Status FailWith(const PGresult* result) {
    bool broken = false;
    absl::Status status = ResultError(backend_->conn.get(), result, &broken);
    if (status.code() == absl::StatusCode::kCancelled ||
        exchange_.cancelled()) {
      status = CancelledStatus();
    }
    if (!broken && !exchange_.Drain(absl::Now() + kDrainTimeout)) {
      broken = true;
    }
    statement_over_ = true;
    return Fail(std::move(status), broken);
  }

  absl::Status Fail(absl::Status status, bool broken) {
    failure_ = std::move(status);
    pending_.reset();
    if (broken && lease_ != nullptr) lease_->MarkBroken();
    statement_over_ = true;  // drained, or the backend closes
    return failure_;
  }

  // The call was cancelled while the statement ran: stop it, read what is
  // left, answer CANCELLED.
  absl::Status Abort() {
    pending_.reset();
    // The interrupter may not have run (the signal fired between batches);
    // one more request costs little.
    exchange_.SendCancel();
    const bool drained = exchange_.Drain(absl::Now() + kDrainTimeout);
    return Fail(CancelledStatus(), /*broken=*/!drained);
  }

  // Gives the backend back (unless borrowed) as soon as the result is over
  // or failed, not when the cursor dies. Never while the interrupter is
  // armed.
  void Finish() {
    owned_.Release();  // nothing when borrowed
    lease_ = nullptr;
  }

  PgBackend* const backend_;  // valid while lease_ is set
  CancelSignal* const cancel_;
  Exchange exchange_;
  Lease owned_;
  Lease* lease_;  // &owned_ or borrowed; null once finished
  v1::Schema schema_;
  std::vector<Oid> types_;
  std::vector<Decode> decode_;
  ResultPtr pending_;  // a row read but not yet in a batch
  bool statement_over_ = false;
  bool settled_ = false;  // the first batch fixed the schema's kinds
  absl::Status failure_;  // sticky: every later Next answers it
  std::string scratch_;   // decoded bytea
};

// ---------------------------------------------------------------------------
// Database

// Sends `statement` on the lease's backend and returns its cursor, which
// owns the lease, or borrows it when `pinned`.
absl::StatusOr<std::unique_ptr<ResultCursor>> QueryOn(
    Lease& lease, bool pinned, const BoundStatement& statement,
    CancelSignal* cancel) {
  if (cancel != nullptr && cancel->cancelled()) return CancelledStatus();
  auto cursor =
      pinned ? std::make_unique<PgCursor>(Lease(), &lease, cancel)
             : std::make_unique<PgCursor>(std::move(lease), nullptr, cancel);
  absl::Status started = cursor->Start(statement);
  if (!started.ok()) return started;
  return std::unique_ptr<ResultCursor>(std::move(cursor));
}

// Runs `statement` (a script when it has no parameters) to its end on the
// lease's backend. rows_affected sums what PostgreSQL reports per statement
// (PQcmdTuples: INSERT, UPDATE, DELETE, MERGE, and the rows of a SELECT or
// CREATE TABLE AS, as psycopg2's rowcount has it). last_insert_id stays 0:
// PostgreSQL has no such thing; INSERT ... RETURNING through Query is the
// way.
absl::StatusOr<ExecuteResult> ExecuteOn(Lease& lease,
                                        const BoundStatement& statement,
                                        CancelSignal* cancel) {
  if (cancel != nullptr && cancel->cancelled()) return CancelledStatus();
  PgBackend& backend = *lease;
  PGconn* conn = backend.conn.get();
  ExecuteResult result;
  for (int attempt = 0;; ++attempt) {
    // Without parameters the SQL may be a script (the simple protocol runs
    // several statements); a SELECT's rows stream by and are dropped.
    std::string prepared_key;
    bool broken = false;
    absl::Status sent = Send(backend, statement, /*allow_script=*/true, cancel,
                             &prepared_key, &broken);
    if (!sent.ok()) {
      if (broken) lease.MarkBroken();
      return sent;
    }
    Exchange exchange(&backend, cancel);
    result = ExecuteResult();
    absl::Status failure;
    bool first = true;
    bool stale = false;  // a stale cached statement failed before it ran
    {
      ScopedInterrupt armed(cancel, CancelInterrupter(backend));
      if (!armed.ok()) exchange.SendCancel();
      for (ResultPtr step; (step = exchange.Next()) != nullptr; first = false) {
        switch (PQresultStatus(step.get())) {
          case PGRES_SINGLE_TUPLE:
          case PGRES_EMPTY_QUERY:
            break;
          case PGRES_TUPLES_OK:
          case PGRES_COMMAND_OK: {
            NoteCommand(backend, step.get());
            int64_t rows = 0;
            if (absl::SimpleAtoi(PQcmdTuples(step.get()), &rows)) {
              result.rows_affected += rows;
            }
            break;
          }
          case PGRES_COPY_IN:
          case PGRES_COPY_OUT:
          case PGRES_COPY_BOTH:
            lease.MarkBroken();
            return CopyUnsupported();
          default:
            if (failure.ok()) {
              bool lost = false;
              failure = ResultError(conn, step.get(), &lost);
              broken = broken || lost;
              stale = first &&
                      RecoverStaleStatement(backend, prepared_key, step.get());
            }
            break;
        }
      }
    }
    if (failure.ok()) break;
    if (broken) lease.MarkBroken();
    if (failure.code() == absl::StatusCode::kCancelled ||
        exchange.cancelled()) {
      return CancelledStatus();
    }
    // Once the cache is fixed, the statement may run again: it failed
    // before running, and outside a transaction (inside one, the failure
    // aborted it).
    if (stale && attempt == 0 && !broken &&
        PQtransactionStatus(conn) == PQTRANS_IDLE) {
      continue;
    }
    return failure;
  }
  return result;
}

// One backend held by a session (see PinnedBackend). Statements go through
// the one-shot paths (QueryOn, ExecuteOn), so they share the backend's
// prepared statements and its cancel handling.
class PgPinned : public PinnedBackend {
 public:
  explicit PgPinned(Lease lease) : lease_(std::move(lease)) {}

  // The recycle hook rolls back what is still open as the lease goes.
  ~PgPinned() override = default;

  absl::Status Begin(const TransactionOptions& options,
                     CancelSignal* cancel) override {
    if (InTransaction()) return TransactionAlreadyOpenError();
    // READ WRITE and NOT DEFERRABLE are the defaults: not spelled out.
    std::vector<std::string> modes;
    const absl::string_view isolation = IsolationLevelSql(options.isolation);
    if (!isolation.empty()) {
      modes.push_back(absl::StrCat("ISOLATION LEVEL ", isolation));
    }
    if (options.read_only) modes.push_back("READ ONLY");
    if (options.deferrable) modes.push_back("DEFERRABLE");
    absl::StatusOr<BoundStatement> statement =
        Bind(absl::StrCat("BEGIN ", absl::StrJoin(modes, ", ")), {});
    if (!statement.ok()) return statement.status();
    return ExecuteOn(lease_, *statement, cancel).status();
  }

  absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params,
      CancelSignal* cancel) override {
    absl::StatusOr<BoundStatement> statement = Bind(sql, params);
    if (!statement.ok()) return statement.status();
    return QueryOn(lease_, /*pinned=*/true, *statement, cancel);
  }

  absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                        const v1::Params& params,
                                        CancelSignal* cancel) override {
    absl::StatusOr<BoundStatement> statement = Bind(sql, params);
    if (!statement.ok()) return statement.status();
    return ExecuteOn(lease_, *statement, cancel);
  }

  bool InTransaction() override {
    // PQTRANS_ACTIVE (a command in flight) cannot be seen between calls;
    // PQTRANS_UNKNOWN is a lost connection, whose transaction is gone.
    const PGTransactionStatusType status =
        PQtransactionStatus(lease_->conn.get());
    return status == PQTRANS_INTRANS || status == PQTRANS_INERROR;
  }

  bool broken() const override { return lease_.broken(); }

 private:
  Lease lease_;
};

class PostgresDatabase : public SinglePoolDatabase<PgBackend> {
 public:
  explicit PostgresDatabase(std::shared_ptr<Pool> pool)
      : SinglePoolDatabase(std::move(pool)) {}

  absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params, Reservation slot,
      CancelSignal* cancel) override {
    absl::StatusOr<BoundStatement> statement = Bind(sql, params);
    if (!statement.ok()) return statement.status();
    absl::StatusOr<Lease> lease = ClaimOwn(std::move(slot));
    if (!lease.ok()) return lease.status();
    return QueryOn(*lease, /*pinned=*/false, *statement, cancel);
  }

  // ExecuteOn, refusing (and rolling back) a transaction left open.
  absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                        const v1::Params& params,
                                        Reservation slot,
                                        CancelSignal* cancel) override {
    absl::StatusOr<BoundStatement> statement = Bind(sql, params);
    if (!statement.ok()) return statement.status();
    absl::StatusOr<Lease> claimed = ClaimOwn(std::move(slot));
    if (!claimed.ok()) return claimed.status();
    Lease& lease = *claimed;
    // On failure, a transaction the script opened is rolled back by the
    // recycle hook.
    absl::StatusOr<ExecuteResult> result = ExecuteOn(lease, *statement, cancel);
    if (!result.ok()) return result;
    // A cancel that came too late to stop the statements does not hide
    // that they ran (and committed).
    PgBackend& backend = *lease;
    const PGTransactionStatusType transaction =
        PQtransactionStatus(backend.conn.get());
    if (transaction == PQTRANS_INTRANS || transaction == PQTRANS_INERROR) {
      if (!RunOwn(backend, "ROLLBACK", {}, backend.io_timeout).ok()) {
        lease.MarkBroken();
      }
      return TransactionLeftOpenError();
    }
    return result;
  }

  absl::StatusOr<std::unique_ptr<PinnedBackend>> Pin(
      Reservation slot) override {
    absl::StatusOr<Lease> lease = ClaimOwn(std::move(slot));
    if (!lease.ok()) return lease.status();
    return std::unique_ptr<PinnedBackend>(new PgPinned(*std::move(lease)));
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> OpenPostgresDatabase(
    const config::ConnectionSpec& spec, const DriverContext& context) {
  ConnectConfig config = BuildConnectConfig(spec);
  Pool::Hooks hooks;
  hooks.open = [config = std::move(config)] { return Connect(config); };
  hooks.recycle = &RecycleBackend;
  hooks.ping = &PingBackend;
  std::shared_ptr<Pool> pool =
      Pool::Create(PoolOptionsFor(spec, "backend", context), std::move(hooks));
  // Opening one backend now makes a bad host or password fail at Connect.
  {
    absl::StatusOr<Lease> first = pool->Acquire();
    if (!first.ok()) {
      pool->Close();
      return first.status();
    }
  }
  return std::unique_ptr<Database>(new PostgresDatabase(std::move(pool)));
}

}  // namespace connbroker::server
