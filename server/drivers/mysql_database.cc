// The MySQL/MariaDB driver: Database and ResultCursor over libmariadb.
//
// Backends: one BackendPool of MYSQL* connections (role "backend"); reads and
// writes alike, since one server does both. libmariadb never reconnects on
// its own here (MYSQL_OPT_RECONNECT off): a silent reconnect would drop
// session state (a transaction, temporary tables, prepared statements) under
// a running call. A backend that loses its link is marked broken and the pool
// opens a new one.
//
// Statements: every Query, and every Execute with parameters, goes through
// the binary (prepared statement) protocol, so parameters are bound by the
// server and never spliced into the SQL. Each backend keeps its prepared
// statements in a small LRU cache keyed by SQL text: MySQL prepares are a
// round trip each, and dashboards repeat the same few queries. SQLAlchemy
// text()'s `:name` and pymysql's `%(name)s` markers are rewritten to `?`.
// An Execute without parameters may be a script of several statements; it
// runs over the text protocol with CLIENT_MULTI_STATEMENTS. A session's
// transaction pins one backend (MysqlPinned) and runs its statements through
// the same paths, keeping the backend between calls.
//
// Results stream unbuffered (no mysql_stmt_store_result): rows are read from
// the socket as batches are built, so memory stays bounded whatever the
// result size; the server waits on TCP backpressure meanwhile.
//
// Cancellation: while a call blocks in the server, its CancelSignal is armed
// with an interrupter that opens a side connection and sends KILL QUERY for
// the backend's thread id. The interrupter runs synchronously (bounded by 2 s
// timeouts) on the cancelling thread: the signal's Disarm waits for it, so a
// KILL can never arrive after the backend went back to the pool and hit
// someone else's statement. A KILL that may have landed after the statement
// finished is absorbed by a no-op statement before the backend is returned.
//
// libmariadb is a C library: nothing here throws.
#include "server/drivers/mysql_database.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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
namespace {

// The "binary" character set: a string column with it holds bytes.
constexpr unsigned int kBinaryCharset = 63;
// Prepared statements kept per backend (closed on eviction).
constexpr size_t kStatementCacheSize = 64;
// Bounds of the side connection that sends KILL QUERY.
constexpr unsigned int kKillTimeoutSeconds = 2;
// A variable-length result column starts with this buffer and grows to the
// longest value seen.
constexpr size_t kInitialCellBuffer = 256;

// The library's global state. mysql_library_init is not thread-safe in
// every client library, so it runs once. libmariadb's own mysql_server_init
// goes through pthread_once and its mysql_thread_init is a no-op (checked in
// Connector/C's mariadb_lib.c), so threads need no per-thread setup.
void InitLibrary() {
  static std::once_flag once;
  std::call_once(once, [] { mysql_library_init(0, nullptr, nullptr); });
}

// ---------------------------------------------------------------------------
// Where to connect

struct Target {
  std::string name;  // the connection's name, for messages
  std::string host;
  std::string user;
  std::string password;  // a secret: never in a message
  std::string database;
  unsigned int port = 0;  // 0: the library's default (3306)
  std::string socket;     // a Unix socket path instead of TCP
  std::string charset = "utf8mb4";
  bool ssl_required = false;
  std::string ssl_ca;
  std::string ssl_cert;
  std::string ssl_key;
  std::optional<bool> ssl_verify_cert;
  unsigned int connect_timeout_seconds = 10;

  // "user@host:port/database" or "user@unix:/path/database", for messages.
  std::string Where() const {
    std::string where = absl::StrCat(user, "@");
    if (!socket.empty()) {
      absl::StrAppend(&where, "unix:", socket);
    } else {
      absl::StrAppend(&where, host.empty() ? "localhost" : host, ":",
                      port == 0 ? 3306 : port);
    }
    if (!database.empty()) absl::StrAppend(&where, "/", database);
    return where;
  }
};

std::optional<bool> ParseBool(absl::string_view text) {
  const std::string value = absl::AsciiStrToLower(text);
  if (value == "1" || value == "true" || value == "yes" || value == "on") {
    return true;
  }
  if (value == "0" || value == "false" || value == "no" || value == "off") {
    return false;
  }
  return std::nullopt;
}

absl::StatusOr<Target> TargetFromSpec(const config::ConnectionSpec& spec) {
  const config::SqlTarget& sql = spec.sql;
  Target target;
  target.name = spec.name;
  target.host = sql.host;
  target.user = sql.username;
  target.password = sql.password;
  target.database = sql.database;
  if (sql.port.has_value()) {
    if (*sql.port < 0 || *sql.port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(
          "connection ", spec.name, ": port ", *sql.port, " is out of range"));
    }
    target.port = static_cast<unsigned int>(*sql.port);
  }
  if (!target.host.empty() && target.host[0] == '/') {
    target.socket = target.host;  // a socket path spelled as the host
  }
  // An allowlist: SQLAlchemy URLs carry options for other drivers (pymysql's
  // local_infile, client_flag, ...) that must not reach the server or be
  // guessed at.
  for (const auto& [key, value] : sql.query) {
    if (key == "charset") {
      target.charset = value;
    } else if (key == "unix_socket") {
      target.socket = value;
    } else if (key == "ssl_ca") {
      target.ssl_ca = value;
    } else if (key == "ssl_cert") {
      target.ssl_cert = value;
    } else if (key == "ssl_key") {
      target.ssl_key = value;
    } else if (key == "ssl" || key == "ssl_verify_cert") {
      std::optional<bool> flag = ParseBool(value);
      if (!flag.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("connection ", spec.name, ": query option ", key,
                         " must be true or false, not '", value, "'"));
      }
      if (key == "ssl") {
        target.ssl_required = *flag;
      } else {
        target.ssl_verify_cert = *flag;
      }
    }
  }
  if (!target.socket.empty()) target.host = "localhost";
  const int64_t seconds = absl::ToInt64Seconds(
      absl::Ceil(spec.pool.connect_timeout, absl::Seconds(1)));
  target.connect_timeout_seconds =
      static_cast<unsigned int>(std::clamp<int64_t>(seconds, 1, 3600));
  return target;
}

// ---------------------------------------------------------------------------
// Errors

struct MysqlError {
  unsigned int code = 0;
  std::string message;
  std::string sqlstate;
};

MysqlError ErrorOf(MYSQL* mysql) {
  MysqlError error;
  error.code = mysql_errno(mysql);
  const char* message = mysql_error(mysql);
  error.message =
      message == nullptr || *message == '\0' ? "unknown MySQL error" : message;
  const char* sqlstate = mysql_sqlstate(mysql);
  if (sqlstate != nullptr) error.sqlstate = sqlstate;
  return error;
}

// The statement's error, else its connection's: an unbuffered fetch that
// meets an error packet (a KILL, a lost link) leaves it on the connection.
MysqlError ErrorOf(MYSQL_STMT* stmt, MYSQL* mysql) {
  if (mysql_stmt_errno(stmt) == 0) return ErrorOf(mysql);
  MysqlError error;
  error.code = mysql_stmt_errno(stmt);
  const char* message = mysql_stmt_error(stmt);
  error.message = message == nullptr ? "unknown MySQL error" : message;
  const char* sqlstate = mysql_stmt_sqlstate(stmt);
  if (sqlstate != nullptr) error.sqlstate = sqlstate;
  return error;
}

// The link to the server is gone (or the server is going).
bool LosesConnection(unsigned int code) {
  switch (code) {
    case CR_CONNECTION_ERROR:         // 2002
    case CR_CONN_HOST_ERROR:          // 2003
    case CR_SERVER_GONE_ERROR:        // 2006
    case CR_SERVER_LOST:              // 2013
    case CR_SERVER_LOST_EXTENDED:     // 2055
    case ER_SERVER_SHUTDOWN:          // 1053
    case ER_CONNECTION_KILLED:        // 1927
    case ER_NEW_ABORTING_CONNECTION:  // 1184
      return true;
    default:
      return false;
  }
}

// The backend cannot be trusted with another statement: the link is gone,
// or the client library is in a state we did not expect (its own errors).
bool BreaksBackend(unsigned int code) {
  return LosesConnection(code) ||
         (code >= CR_MIN_ERROR && code <= CR_MAX_ERROR) ||
         (code >= CER_MIN_ERROR && code <= CER_MAX_ERROR);
}

// The one place MySQL error numbers become statuses, for statements.
absl::Status StatusOf(const MysqlError& error) {
  const std::string text =
      absl::StrCat(error.message, " (MySQL error ", error.code, ")");
  absl::Status status;
  switch (error.code) {
    case 0:
      status = absl::InternalError("MySQL call failed without an error");
      break;
    case ER_QUERY_INTERRUPTED:  // 1317: our KILL QUERY
      status = absl::CancelledError(absl::StrCat("query cancelled: ", text));
      break;
    case ER_LOCK_WAIT_TIMEOUT:  // 1205
    case ER_LOCK_DEADLOCK:      // 1213
      status = absl::AbortedError(text);
      break;
    case ER_DBACCESS_DENIED_ERROR:            // 1044
    case ER_ACCESS_DENIED_ERROR:              // 1045
    case ER_TABLEACCESS_DENIED_ERROR:         // 1142
    case ER_COLUMNACCESS_DENIED_ERROR:        // 1143
    case ER_SPECIFIC_ACCESS_DENIED_ERROR:     // 1227
    case ER_PROCACCESS_DENIED_ERROR:          // 1370
    case ER_ACCESS_DENIED_NO_PASSWORD_ERROR:  // 1698
      status = absl::PermissionDeniedError(text);
      break;
    case ER_STATEMENT_TIMEOUT:  // 1969, MariaDB's max_statement_time
    case 3024:                  // MySQL's ER_QUERY_TIMEOUT (max_execution_time)
      status = absl::DeadlineExceededError(text);
      break;
    case ER_CON_COUNT_ERROR:  // 1040: too many connections, try later
      status = absl::UnavailableError(text);
      break;
    case ER_OUTOFMEMORY:
    case CR_OUT_OF_MEMORY:
      status = absl::ResourceExhaustedError(text);
      break;
    default:
      if (LosesConnection(error.code)) {
        status = absl::UnavailableError(text);
      } else if (BreaksBackend(error.code)) {
        // A client-library error we did not expect (commands out of sync,
        // ...): ours, not the statement's.
        status = absl::InternalError(text);
      } else {
        // 1064 syntax, 1146 no such table, 1062 duplicate key, ...
        status = absl::InvalidArgumentError(text);
      }
  }
  return WithSqlState(std::move(status), error.sqlstate);
}

// `text` with every occurrence of `secret` masked (libmariadb's messages do
// not quote the password, but a server plugin's might).
std::string Scrub(std::string text, const std::string& secret) {
  if (secret.size() >= 3) absl::StrReplaceAll({{secret, "***"}}, &text);
  return text;
}

absl::Status ConnectStatus(const MysqlError& error, const Target& target) {
  const std::string text =
      Scrub(absl::StrCat("cannot connect connection ", target.name,
                         " to MySQL at ", target.Where(), ": ", error.message,
                         " (MySQL error ", error.code, ")"),
            target.password);
  absl::Status status;
  switch (error.code) {
    case ER_DBACCESS_DENIED_ERROR:            // 1044
    case ER_ACCESS_DENIED_ERROR:              // 1045
    case ER_ACCESS_DENIED_NO_PASSWORD_ERROR:  // 1698
      status = absl::PermissionDeniedError(text);
      break;
    case CR_CANT_READ_CHARSET:  // a charset option the library lacks
      status = absl::InvalidArgumentError(text);
      break;
    case ER_BAD_DB_ERROR:  // 1049: the configured database does not exist
      // Permanent until someone creates it: not a broken backend to reset
      // and retry.
      status = absl::FailedPreconditionError(text);
      break;
    default:
      status = absl::UnavailableError(text);
  }
  return WithSqlState(std::move(status), error.sqlstate);
}

// ---------------------------------------------------------------------------
// Connections

struct MysqlCloser {
  void operator()(MYSQL* mysql) const { mysql_close(mysql); }
};
using MysqlHandle = std::unique_ptr<MYSQL, MysqlCloser>;

// Opens a connection to `target`. `io_timeout_seconds` (0: none) bounds each
// read and write: only for the side connection, since a query may rightly
// take longer than any fixed bound.
absl::StatusOr<MysqlHandle> Connect(const Target& target,
                                    unsigned int connect_timeout_seconds,
                                    unsigned int io_timeout_seconds,
                                    unsigned long client_flags) {
  MysqlHandle mysql(mysql_init(nullptr));
  if (mysql == nullptr) {
    return absl::ResourceExhaustedError("mysql_init: out of memory");
  }
  MYSQL* m = mysql.get();
  bool ok = true;
  auto set = [&](enum mysql_option option, const void* value) {
    ok = ok && mysql_options(m, option, value) == 0;
  };
  set(MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout_seconds);
  if (io_timeout_seconds > 0) {
    set(MYSQL_OPT_READ_TIMEOUT, &io_timeout_seconds);
    set(MYSQL_OPT_WRITE_TIMEOUT, &io_timeout_seconds);
  }
  const my_bool no = 0;
  const my_bool yes = 1;
  set(MYSQL_OPT_RECONNECT, &no);
  set(MYSQL_SET_CHARSET_NAME, target.charset.c_str());
  if (!target.socket.empty()) {
    const unsigned int protocol = MYSQL_PROTOCOL_SOCKET;
    set(MYSQL_OPT_PROTOCOL, &protocol);
  }
  if (target.ssl_required) set(MYSQL_OPT_SSL_ENFORCE, &yes);
  if (!target.ssl_ca.empty()) set(MYSQL_OPT_SSL_CA, target.ssl_ca.c_str());
  if (!target.ssl_cert.empty()) {
    set(MYSQL_OPT_SSL_CERT, target.ssl_cert.c_str());
  }
  if (!target.ssl_key.empty()) set(MYSQL_OPT_SSL_KEY, target.ssl_key.c_str());
  if (target.ssl_verify_cert.has_value()) {
    set(MYSQL_OPT_SSL_VERIFY_SERVER_CERT, *target.ssl_verify_cert ? &yes : &no);
  }
  if (!ok) {
    return absl::InternalError(
        absl::StrCat("connection ", target.name,
                     ": libmariadb refused an option: ", mysql_error(m)));
  }
  if (mysql_real_connect(
          m, target.host.empty() ? nullptr : target.host.c_str(),
          target.user.c_str(), target.password.c_str(),
          target.database.empty() ? nullptr : target.database.c_str(),
          target.port, target.socket.empty() ? nullptr : target.socket.c_str(),
          client_flags) == nullptr) {
    return ConnectStatus(ErrorOf(m), target);
  }
  return mysql;
}

// Sends KILL QUERY for `thread_id` over a side connection: the backend itself
// is blocked reading the statement's answer.
absl::Status KillQuery(const Target& target, unsigned long thread_id) {
  absl::StatusOr<MysqlHandle> side =
      Connect(target, kKillTimeoutSeconds, kKillTimeoutSeconds, 0);
  if (!side.ok()) return side.status();
  const std::string sql = absl::StrCat("KILL QUERY ", thread_id);
  if (mysql_real_query(side->get(), sql.data(), sql.size()) != 0) {
    return StatusOf(ErrorOf(side->get()));
  }
  return absl::OkStatus();
}

// The prepared statements of one backend, least recently used evicted.
class StatementCache {
 public:
  explicit StatementCache(size_t capacity) : capacity_(capacity) {}
  ~StatementCache() { Clear(); }
  StatementCache(const StatementCache&) = delete;
  StatementCache& operator=(const StatementCache&) = delete;

  // The statement prepared for `sql`, or null.
  MYSQL_STMT* Find(const std::string& sql) {
    auto it = index_.find(sql);
    if (it == index_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->second;
  }

  void Insert(const std::string& sql, MYSQL_STMT* stmt) {
    Erase(sql);
    lru_.emplace_front(sql, stmt);
    index_[sql] = lru_.begin();
    while (lru_.size() > capacity_) {
      index_.erase(lru_.back().first);
      mysql_stmt_close(lru_.back().second);  // frees it on the server too
      lru_.pop_back();
    }
  }

  void Erase(const std::string& sql) {
    auto it = index_.find(sql);
    if (it == index_.end()) return;
    mysql_stmt_close(it->second->second);
    lru_.erase(it->second);
    index_.erase(it);
  }

  void Clear() {
    for (auto& [sql, stmt] : lru_) mysql_stmt_close(stmt);
    lru_.clear();
    index_.clear();
  }

 private:
  using Entry = std::pair<std::string, MYSQL_STMT*>;
  const size_t capacity_;
  std::list<Entry> lru_;  // most recently used first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_;
};

// One open MYSQL*. Owned by the pool; used by one thread at a time.
class MysqlBackend {
 public:
  explicit MysqlBackend(MysqlHandle mysql)
      : mysql_(std::move(mysql)), thread_id_(mysql_thread_id(mysql_.get())) {}

  MYSQL* mysql() const { return mysql_.get(); }
  // The server's id of this connection, for KILL QUERY.
  unsigned long thread_id() const { return thread_id_; }
  StatementCache& statements() { return statements_; }

 private:
  MysqlHandle mysql_;  // declared first: closed after the statements
  const unsigned long thread_id_;
  StatementCache statements_{kStatementCacheSize};
};

using Pool = BackendPool<MysqlBackend>;
using Lease = Pool::Lease;

absl::StatusOr<std::unique_ptr<MysqlBackend>> OpenBackend(
    const Target& target) {
  // MULTI_STATEMENTS for Execute's scripts (the binary protocol refuses
  // several statements whatever this says, and parameters are never spliced,
  // so it opens no injection path). FOUND_ROWS: rows_affected counts the rows
  // an UPDATE matched, as SQLAlchemy's MySQL dialects have it.
  absl::StatusOr<MysqlHandle> mysql =
      Connect(target, target.connect_timeout_seconds, 0,
              CLIENT_MULTI_STATEMENTS | CLIENT_FOUND_ROWS);
  if (!mysql.ok()) return mysql.status();
  MYSQL* m = mysql->get();
  // Execute's one-shot statements rely on autocommit; a server whose
  // init_connect turns it off would otherwise hold every write open.
  if ((m->server_status & SERVER_STATUS_AUTOCOMMIT) == 0 &&
      mysql_autocommit(m, 1) != 0) {
    return ConnectStatus(ErrorOf(m), target);
  }
  return std::make_unique<MysqlBackend>(*std::move(mysql));
}

// Runs as a backend goes back to the pool: the next user must not inherit a
// transaction (BEGIN through Query, a failed script, a session's left open)
// or autocommit turned off; a failed ROLLBACK closes the backend. Only when
// the server says so, so a clean return costs no round trip; a dead link is
// caught by pre-ping or by the next statement (UNAVAILABLE, retried by the
// broker), not by a ping on every return.
bool RecycleBackend(MysqlBackend& backend) {
  MYSQL* m = backend.mysql();
  if ((m->server_status & SERVER_STATUS_IN_TRANS) != 0 &&
      mysql_rollback(m) != 0) {
    return false;
  }
  if ((m->server_status & SERVER_STATUS_AUTOCOMMIT) == 0 &&
      mysql_autocommit(m, 1) != 0) {
    return false;
  }
  return true;
}

bool PingBackend(MysqlBackend& backend) {
  return mysql_ping(backend.mysql()) == 0;
}

// ---------------------------------------------------------------------------
// Cancellation

// Interrupts the statement running on one backend from another thread.
//
// The interrupter only starts the KILL on a thread of its own: it runs under
// the CancelSignal's lock, often on a gRPC reactor thread, and a side
// connection can take up to its connect timeout. The thread that owns the
// backend waits for that thread (Wait, cut, SettleAfterKill) before it
// hands the backend on, so a late KILL can never reach the next user.
class Killer {
 public:
  Killer(std::shared_ptr<const Target> target, MysqlBackend& backend)
      : target_(std::move(target)),
        thread_id_(backend.thread_id()),
        mysql_(backend.mysql()) {}
  ~Killer() { Wait(); }
  Killer(const Killer&) = delete;
  Killer& operator=(const Killer&) = delete;

  // The interrupter to arm; `this` must outlive the armed scope.
  std::function<void()> Interrupter() {
    return [this] { Start(); };
  }

  // From the owning thread: kills and waits until the KILL was sent.
  void Kill() {
    Start();
    Wait();
  }

  bool fired() const { return fired_.load(std::memory_order_acquire); }
  // The backend's link was cut: it must be closed. Waits for the KILL.
  bool cut() {
    Wait();
    return cut_.load(std::memory_order_acquire);
  }

  // Until the KILL started by the interrupter, if any, was sent.
  void Wait() {
    std::thread killing;
    {
      absl::MutexLock lock(&mu_);
      killing = std::move(thread_);
    }
    if (killing.joinable()) killing.join();
  }

 private:
  // Sends KILL QUERY; when that fails (the server refuses new connections,
  // say), shuts the backend's socket down instead, so the call returns
  // anyway -- at the price of the backend. At most once.
  void Start() {
    absl::MutexLock lock(&mu_);
    if (fired_.exchange(true, std::memory_order_acq_rel)) return;
    thread_ = std::thread([this] {
      if (!KillQuery(*target_, thread_id_).ok()) {
        mariadb_cancel(mysql_);
        cut_.store(true, std::memory_order_release);
      }
    });
  }

  const std::shared_ptr<const Target> target_;
  const unsigned long thread_id_;
  MYSQL* const mysql_;
  std::atomic<bool> fired_{false};
  std::atomic<bool> cut_{false};
  absl::Mutex mu_;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

// After a KILL QUERY the statement is over, but the KILL may have reached
// the server just after it ended; a no-op takes the hit so the next user's
// statement cannot. False: close the backend.
bool SettleAfterKill(MysqlBackend& backend, Killer& killer) {
  if (killer.cut()) return false;
  MYSQL* m = backend.mysql();
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (mysql_real_query(m, "DO 0", 4) == 0) return true;
    if (mysql_errno(m) != ER_QUERY_INTERRUPTED) return false;
  }
  return false;
}

bool IsCancelled(const CancelSignal* cancel) {
  return cancel != nullptr && cancel->cancelled();
}

absl::Status CancelledStatus() {
  return absl::CancelledError("query cancelled");
}

// ---------------------------------------------------------------------------
// Parameters

bool IsWordByte(char c) {
  const auto u = static_cast<unsigned char>(c);
  return absl::ascii_isalnum(u) || c == '_' || u >= 0x80;
}

// A `--` starts a comment only when followed by a blank or a control
// character (MySQL's rule: `5--3` is arithmetic).
bool StartsDashComment(absl::string_view sql, size_t i) {
  if (sql.substr(i, 2) != "--") return false;
  return i + 2 >= sql.size() || static_cast<unsigned char>(sql[i + 2]) <= ' ';
}

// One `?` per value, pointing into the caller's Params (they outlive the
// statement's execution).
struct BoundSql {
  std::string sql;
  std::vector<const v1::Value*> values;
};

absl::StatusOr<BoundSql> ResolveParams(const std::string& sql,
                                       const v1::Params& params) {
  BoundSql bound;
  const bool positional = params.positional_size() > 0;
  const bool named = !params.named().empty();
  if (positional && named) {
    return absl::InvalidArgumentError(
        "parameters are given both by position and by name; use one style");
  }
  if (!named) {
    bound.sql = sql;
    for (const v1::Value& value : params.positional()) {
      bound.values.push_back(&value);
    }
    return bound;
  }
  mysql_internal::RewrittenSql rewritten =
      mysql_internal::RewriteNamedParams(sql);
  if (rewritten.names.empty()) {
    bound.sql = sql;  // names given, none used (extra keys are ignored)
    return bound;
  }
  if (rewritten.question_marks > 0) {
    return absl::InvalidArgumentError(
        "the SQL mixes ? markers with named parameters; use one style");
  }
  for (size_t i = 0; i < rewritten.names.size(); ++i) {
    auto it = params.named().find(rewritten.names[i]);
    if (it == params.named().end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("no value for parameter ", rewritten.spellings[i]));
    }
    bound.values.push_back(&it->second);
  }
  bound.sql = std::move(rewritten.sql);
  return bound;
}

// MYSQL_BINDs for `values`, with the storage they point to. MySQL has no
// boolean type: a bool binds as TINYINT 0/1, as pymysql sends it.
class ParamBinds {
 public:
  explicit ParamBinds(const std::vector<const v1::Value*>& values)
      : binds_(values.size()),
        tinies_(values.size()),
        integers_(values.size()),
        reals_(values.size()) {
    for (size_t i = 0; i < values.size(); ++i) {
      MYSQL_BIND& bind = binds_[i];
      const v1::Value& value = *values[i];
      switch (value.kind_case()) {
        case v1::Value::kBoolValue:
          tinies_[i] = value.bool_value() ? 1 : 0;
          bind.buffer_type = MYSQL_TYPE_TINY;
          bind.buffer = &tinies_[i];
          break;
        case v1::Value::kInt64Value:
          integers_[i] = value.int64_value();
          bind.buffer_type = MYSQL_TYPE_LONGLONG;
          bind.buffer = &integers_[i];
          break;
        case v1::Value::kDoubleValue:
          reals_[i] = value.double_value();
          bind.buffer_type = MYSQL_TYPE_DOUBLE;
          bind.buffer = &reals_[i];
          break;
        case v1::Value::kTextValue:
          bind.buffer_type = MYSQL_TYPE_STRING;
          bind.buffer = const_cast<char*>(value.text_value().data());
          bind.buffer_length = value.text_value().size();
          break;
        case v1::Value::kBlobValue:
          bind.buffer_type = MYSQL_TYPE_BLOB;
          bind.buffer = const_cast<char*>(value.blob_value().data());
          bind.buffer_length = value.blob_value().size();
          break;
        case v1::Value::kNullValue:
        case v1::Value::KIND_NOT_SET:
          bind.buffer_type = MYSQL_TYPE_NULL;
          break;
      }
    }
  }

  MYSQL_BIND* data() { return binds_.data(); }
  size_t size() const { return binds_.size(); }

 private:
  std::vector<MYSQL_BIND> binds_;  // value-initialized: zeroed
  std::vector<signed char> tinies_;
  std::vector<long long> integers_;
  std::vector<double> reals_;
};

// ---------------------------------------------------------------------------
// Result columns

// How a column's cells travel.
enum class CellKind {
  kInt64,
  kUnsignedText,  // BIGINT UNSIGNED
  kDouble,
  kText,
  kBlob,
  kDate,
  kTime,
  kDateTime,
};

struct ColumnPlan {
  CellKind kind = CellKind::kText;
  std::string database_type;
};

bool IsBinary(const MYSQL_FIELD& field) {
  return field.charsetnr == kBinaryCharset;
}

// MariaDB's extended metadata names types the protocol folds into others
// (json is a longtext, uuid a char, inet6 a binary).
std::string ExtendedTypeName(const MYSQL_FIELD& field) {
  MARIADB_CONST_STRING attr{};
  if (mariadb_field_attr(&attr, &field, MARIADB_FIELD_ATTR_FORMAT_NAME) == 0 &&
      attr.length > 0) {
    return std::string(attr.str, attr.length);
  }
  if (mariadb_field_attr(&attr, &field, MARIADB_FIELD_ATTR_DATA_TYPE_NAME) ==
          0 &&
      attr.length > 0) {
    return std::string(attr.str, attr.length);
  }
  return "";
}

// The column's database type name and how its cells travel. No value
// changes silently on the way:
//  - BIGINT UNSIGNED travels as text (its decimal digits), for every row:
//    values above INT64_MAX would not fit an int64, and a column must not
//    switch kinds from one row to the next.
//  - DECIMAL travels as text: exact, as the server formats it.
//  - Dates and times travel as ISO text; TIME may be negative or past 24 h.
//  - TINYINT(1) stays an integer (MySQL has no boolean; BOOL is an alias).
//  - BIT and GEOMETRY travel as blobs: BIT(n) as its big-endian bytes (as
//    pymysql returns it; BIT(64) would not fit an int64), GEOMETRY as the
//    server's internal WKB with its SRID prefix.
//  - Strings with the binary character set (BINARY, VARBINARY, BLOB) travel
//    as blobs; other strings as text (invalid UTF-8 becomes a blob in
//    ColumnBuilder).
ColumnPlan PlanColumn(const MYSQL_FIELD& field) {
  ColumnPlan plan;
  const bool is_unsigned = (field.flags & UNSIGNED_FLAG) != 0;
  auto integer = [&](const char* name) {
    plan.kind = CellKind::kInt64;
    plan.database_type = is_unsigned ? absl::StrCat(name, " unsigned") : name;
  };
  switch (field.type) {
    case MYSQL_TYPE_TINY:
      integer("tinyint");
      break;
    case MYSQL_TYPE_SHORT:
      integer("smallint");
      break;
    case MYSQL_TYPE_INT24:
      integer("mediumint");
      break;
    case MYSQL_TYPE_LONG:
      integer("int");
      break;
    case MYSQL_TYPE_LONGLONG:
      integer("bigint");
      if (is_unsigned) plan.kind = CellKind::kUnsignedText;
      break;
    case MYSQL_TYPE_YEAR:
      plan = {CellKind::kInt64, "year"};
      break;
    case MYSQL_TYPE_FLOAT:
      plan = {CellKind::kDouble, "float"};
      break;
    case MYSQL_TYPE_DOUBLE:
      plan = {CellKind::kDouble, "double"};
      break;
    case MYSQL_TYPE_DECIMAL:
    case MYSQL_TYPE_NEWDECIMAL:
      plan = {CellKind::kText, "decimal"};
      break;
    case MYSQL_TYPE_DATE:
    case MYSQL_TYPE_NEWDATE:
      plan = {CellKind::kDate, "date"};
      break;
    case MYSQL_TYPE_TIME:
    case MYSQL_TYPE_TIME2:
      plan = {CellKind::kTime, "time"};
      break;
    case MYSQL_TYPE_DATETIME:
    case MYSQL_TYPE_DATETIME2:
      plan = {CellKind::kDateTime, "datetime"};
      break;
    case MYSQL_TYPE_TIMESTAMP:
    case MYSQL_TYPE_TIMESTAMP2:
      plan = {CellKind::kDateTime, "timestamp"};
      break;
    case MYSQL_TYPE_BIT:
      plan = {CellKind::kBlob, "bit"};
      break;
    case MYSQL_TYPE_GEOMETRY:
      plan = {CellKind::kBlob, "geometry"};
      break;
    case MYSQL_TYPE_JSON:
      plan = {CellKind::kText, "json"};
      break;
    case MYSQL_TYPE_NULL:
      plan = {CellKind::kText, "null"};
      break;
    case MYSQL_TYPE_ENUM:
      plan = {CellKind::kText, "enum"};
      break;
    case MYSQL_TYPE_SET:
      plan = {CellKind::kText, "set"};
      break;
    case MYSQL_TYPE_STRING:
      if ((field.flags & ENUM_FLAG) != 0) {
        plan = {CellKind::kText, "enum"};
      } else if ((field.flags & SET_FLAG) != 0) {
        plan = {CellKind::kText, "set"};
      } else if (IsBinary(field)) {
        plan = {CellKind::kBlob, "binary"};
      } else {
        plan = {CellKind::kText, "char"};
      }
      break;
    case MYSQL_TYPE_VARCHAR:
    case MYSQL_TYPE_VAR_STRING:
      plan = IsBinary(field) ? ColumnPlan{CellKind::kBlob, "varbinary"}
                             : ColumnPlan{CellKind::kText, "varchar"};
      break;
    case MYSQL_TYPE_TINY_BLOB:
    case MYSQL_TYPE_MEDIUM_BLOB:
    case MYSQL_TYPE_LONG_BLOB:
    case MYSQL_TYPE_BLOB:
      plan = IsBinary(field) ? ColumnPlan{CellKind::kBlob, "blob"}
                             : ColumnPlan{CellKind::kText, "text"};
      break;
    default:
      plan = IsBinary(field) ? ColumnPlan{CellKind::kBlob, ""}
                             : ColumnPlan{CellKind::kText, ""};
  }
  const std::string extended = ExtendedTypeName(field);
  if (!extended.empty()) {
    plan.database_type = extended;
    if (extended == "json") plan.kind = CellKind::kText;
  }
  return plan;
}

// Room for any FormatTime text, even of nonsense fields: six 10-digit
// numbers, a sign, the separators and six fractional digits.
constexpr size_t kTimeTextBytes = 80;

// Writes `value` in decimal, zero-padded to `width` digits, at `p`; returns
// the end. By hand, not snprintf: it runs for every date cell of a stream.
char* PutDigits(char* p, unsigned long value, int width) {
  char digits[20];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n < width) digits[n++] = '0';
  while (n > 0) *p++ = digits[--n];
  return p;
}

// Writes `t` into `out` as the server prints it; returns the text.
absl::string_view FormatTime(const MYSQL_TIME& t, CellKind kind,
                             unsigned int decimals,
                             char (&out)[kTimeTextBytes]) {
  char* p = out;
  if (kind == CellKind::kDate || kind == CellKind::kDateTime) {
    p = PutDigits(p, t.year, 4);
    *p++ = '-';
    p = PutDigits(p, t.month, 2);
    *p++ = '-';
    p = PutDigits(p, t.day, 2);
    if (kind == CellKind::kDate) return absl::string_view(out, p - out);
    *p++ = ' ';
  } else if (t.neg) {  // kTime; libmariadb folds the days into `hour`
    *p++ = '-';
  }
  p = PutDigits(p, t.hour, 2);
  *p++ = ':';
  p = PutDigits(p, t.minute, 2);
  *p++ = ':';
  p = PutDigits(p, t.second, 2);
  // As the server prints it: a column declared with fractional seconds
  // shows that many digits; one without (or an expression, whose decimals
  // say nothing) shows microseconds only when there are some.
  unsigned int digits = 0;
  if (decimals >= 1 && decimals <= 6) {
    digits = decimals;
  } else if (t.second_part != 0) {
    digits = 6;
  }
  if (digits > 0) {
    char fraction[20];
    PutDigits(fraction, t.second_part % 1000000, 6);
    *p++ = '.';
    for (unsigned int k = 0; k < digits; ++k) *p++ = fraction[k];
  }
  return absl::string_view(out, p - out);
}

// The result columns of one statement bound to buffers this object owns,
// and the current row's cells.
class ResultRow {
 public:
  // Plans and binds every column of `fields`.
  ResultRow(const MYSQL_FIELD* fields, unsigned int count)
      : slots_(count), binds_(count) {
    for (unsigned int i = 0; i < count; ++i) {
      Slot& slot = slots_[i];
      MYSQL_BIND& bind = binds_[i];
      slot.plan = PlanColumn(fields[i]);
      slot.decimals = fields[i].decimals;
      bind.is_null = &slot.is_null;
      bind.length = &slot.length;
      bind.error = &slot.error;
      switch (slot.plan.kind) {
        case CellKind::kInt64:
        case CellKind::kUnsignedText:
          bind.buffer_type = MYSQL_TYPE_LONGLONG;
          bind.buffer = &slot.integer;
          bind.is_unsigned = (fields[i].flags & UNSIGNED_FLAG) != 0;
          break;
        case CellKind::kDouble:
          bind.buffer_type = MYSQL_TYPE_DOUBLE;
          bind.buffer = &slot.real;
          break;
        case CellKind::kDate:
          bind.buffer_type = MYSQL_TYPE_DATE;
          bind.buffer = &slot.time;
          break;
        case CellKind::kTime:
          bind.buffer_type = MYSQL_TYPE_TIME;
          bind.buffer = &slot.time;
          break;
        case CellKind::kDateTime:
          bind.buffer_type = MYSQL_TYPE_DATETIME;
          bind.buffer = &slot.time;
          break;
        case CellKind::kText:
        case CellKind::kBlob:
          bind.buffer_type = slot.plan.kind == CellKind::kText
                                 ? MYSQL_TYPE_STRING
                                 : MYSQL_TYPE_BLOB;
          slot.buffer.resize(kInitialCellBuffer);
          bind.buffer = slot.buffer.data();
          bind.buffer_length = slot.buffer.size();
          break;
      }
    }
  }

  const ColumnPlan& plan(int column) const { return slots_[column].plan; }
  MYSQL_BIND* binds() { return binds_.data(); }

  // Fetches the next row into the buffers: 0, MYSQL_NO_DATA, or 1 (error).
  // A value longer than its buffer grows the buffer and is fetched again,
  // and the grown buffer stays bound for the rows that follow.
  int Fetch(MYSQL_STMT* stmt) {
    const int rc = mysql_stmt_fetch(stmt);
    if (rc != 0 && rc != MYSQL_DATA_TRUNCATED) return rc;
    bool rebind = false;
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& slot = slots_[i];
      if ((slot.plan.kind != CellKind::kText &&
           slot.plan.kind != CellKind::kBlob) ||
          slot.is_null || slot.length <= slot.buffer.size()) {
        continue;
      }
      slot.buffer.resize(slot.length);
      binds_[i].buffer = slot.buffer.data();
      binds_[i].buffer_length = slot.buffer.size();
      MYSQL_BIND again = binds_[i];
      if (mysql_stmt_fetch_column(stmt, &again, static_cast<unsigned int>(i),
                                  0) != 0) {
        return 1;
      }
      rebind = true;
    }
    if (rebind && mysql_stmt_bind_result(stmt, binds_.data()) != 0) return 1;
    return 0;
  }

  // Appends the current row as row `row` of `builders`; returns its size.
  size_t AppendTo(std::vector<ColumnBuilder>& builders, int row) const {
    size_t bytes = 0;
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& slot = slots_[i];
      ColumnBuilder& builder = builders[i];
      if (slot.is_null) {
        bytes += builder.AppendNull(row);
        continue;
      }
      switch (slot.plan.kind) {
        case CellKind::kInt64:
          bytes += builder.AppendInt64(row, slot.integer);
          break;
        case CellKind::kUnsignedText:
          bytes += builder.AppendText(
              row, absl::StrCat(static_cast<uint64_t>(slot.integer)));
          break;
        case CellKind::kDouble:
          bytes += builder.AppendDouble(row, slot.real);
          break;
        case CellKind::kText:
          bytes += builder.AppendText(
              row, absl::string_view(slot.buffer.data(), slot.length));
          break;
        case CellKind::kBlob:
          bytes += builder.AppendBlob(
              row, absl::string_view(slot.buffer.data(), slot.length));
          break;
        case CellKind::kDate:
        case CellKind::kTime:
        case CellKind::kDateTime: {
          char text[kTimeTextBytes];
          bytes += builder.AppendText(
              row, FormatTime(slot.time, slot.plan.kind, slot.decimals, text));
          break;
        }
      }
    }
    return bytes;
  }

 private:
  struct Slot {
    ColumnPlan plan;
    unsigned int decimals = 0;
    long long integer = 0;
    double real = 0;
    MYSQL_TIME time{};
    std::string buffer;
    unsigned long length = 0;
    my_bool is_null = 0;
    my_bool error = 0;
  };
  // Sized once: the binds point into the slots.
  std::vector<Slot> slots_;
  std::vector<MYSQL_BIND> binds_;
};

// ---------------------------------------------------------------------------
// Statements

// The prepared statement for `sql` on `backend`: from its cache, or new.
absl::StatusOr<MYSQL_STMT*> PrepareCached(MysqlBackend& backend,
                                          const std::string& sql) {
  if (MYSQL_STMT* cached = backend.statements().Find(sql)) return cached;
  MYSQL* m = backend.mysql();
  MYSQL_STMT* stmt = mysql_stmt_init(m);
  if (stmt == nullptr) return StatusOf(ErrorOf(m));
  // No server-side cursor: the server streams the rows, which we read as
  // batches are built (a cursor would materialize the result on the server,
  // and STMT_ATTR_PREFETCH_ROWS only applies to cursors).
  const unsigned long cursor = CURSOR_TYPE_NO_CURSOR;
  mysql_stmt_attr_set(stmt, STMT_ATTR_CURSOR_TYPE, &cursor);
  if (mysql_stmt_prepare(stmt, sql.data(), sql.size()) != 0) {
    MysqlError error = ErrorOf(stmt, m);
    mysql_stmt_close(stmt);
    if (error.code == ER_UNSUPPORTED_PS) {
      error.message = absl::StrCat(
          error.message, "; run it with Execute (without parameters)");
    }
    return StatusOf(error);
  }
  backend.statements().Insert(sql, stmt);
  return stmt;
}

// The status of a failed call on `lease`'s backend; a backend the failure
// broke is closed on return.
absl::Status Failure(Lease& lease, const MysqlError& error) {
  if (BreaksBackend(error.code)) lease.MarkBroken();
  return StatusOf(error);
}

// Prepares `bound` on the lease's backend and binds its parameters.
absl::StatusOr<MYSQL_STMT*> PrepareAndBind(Lease& lease, const BoundSql& bound,
                                           ParamBinds& binds) {
  absl::StatusOr<MYSQL_STMT*> stmt = PrepareCached(*lease, bound.sql);
  if (!stmt.ok()) {
    if (stmt.status().code() == absl::StatusCode::kUnavailable ||
        stmt.status().code() == absl::StatusCode::kInternal) {
      lease.MarkBroken();
    }
    return stmt.status();
  }
  const unsigned long expected = mysql_stmt_param_count(*stmt);
  if (expected != bound.values.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the statement has ", expected, " parameter", expected == 1 ? "" : "s",
        ", ", bound.values.size(), " given"));
  }
  if (binds.size() > 0 && mysql_stmt_bind_param(*stmt, binds.data()) != 0) {
    return Failure(lease, ErrorOf(*stmt, lease->mysql()));
  }
  return stmt;
}

// Reads past the results still pending after the current one (a CALL
// answers with several), so the connection is ready for the next command.
// False when that failed (close the backend).
bool SkipMoreResults(MYSQL_STMT* stmt) {
  while (mysql_stmt_more_results(stmt)) {
    const int rc = mysql_stmt_next_result(stmt);
    if (rc < 0) break;
    if (rc > 0) return !BreaksBackend(mysql_stmt_errno(stmt));
    if (mysql_stmt_field_count(stmt) > 0) mysql_stmt_free_result(stmt);
  }
  return true;
}

// libmariadb refuses to decode a result whose columns changed since the
// statement was prepared (ALTER TABLE, a redefined procedure), although the
// server ran it and its rows are on the way. Reads them off the wire and
// drops the statement from the cache, so the next prepare sees the new
// columns. False: the backend is unusable.
bool DropStaleStatement(MysqlBackend& backend, MYSQL_STMT* stmt,
                        const std::string& sql) {
  mysql_stmt_free_result(stmt);
  const bool ok =
      !BreaksBackend(mysql_errno(backend.mysql())) && SkipMoreResults(stmt);
  backend.statements().Erase(sql);
  return ok;
}

// True when `sql` starts (after blanks, comments and parentheses) with a
// keyword that only reads, so running it again cannot double an effect.
bool LooksLikeRead(absl::string_view sql) {
  const absl::string_view keyword = LeadingKeyword(
      sql, SqlComments{.hash_lines = true, .dash_needs_blank = true});
  for (absl::string_view read : {"select", "with", "show", "values", "table",
                                 "desc", "describe", "explain"}) {
    if (absl::EqualsIgnoreCase(keyword, read)) return true;
  }
  return false;
}

class MysqlCursor : public ResultCursor {
 public:
  // Owns `owned` when `borrowed` is null; else runs on *borrowed (a pinned
  // backend's lease, which outlives the cursor and stays pinned when the
  // result ends).
  MysqlCursor(Lease owned, Lease* borrowed, MYSQL_STMT* stmt,
              std::unique_ptr<Killer> killer, CancelSignal* cancel)
      : owned_(std::move(owned)),
        lease_(borrowed != nullptr ? borrowed : &owned_),
        stmt_(stmt),
        killer_(std::move(killer)),
        cancel_(cancel) {
    MYSQL_RES* metadata = mysql_stmt_result_metadata(stmt_);
    if (metadata == nullptr) {
      // No result set (an INSERT or SET through Query): nothing to read.
      exhausted_ = true;
      Finish();
      return;
    }
    const unsigned int count = mysql_num_fields(metadata);
    const MYSQL_FIELD* fields = mysql_fetch_fields(metadata);
    row_ = std::make_unique<ResultRow>(fields, count);
    not_null_.resize(count);
    for (unsigned int i = 0; i < count; ++i) {
      v1::Column* column = schema_.add_columns();
      column->set_name(fields[i].name == nullptr ? "" : fields[i].name);
      column->set_database_type(row_->plan(i).database_type);
      column->set_nullable(true);
      not_null_[i] = (fields[i].flags & NOT_NULL_FLAG) != 0;
    }
    mysql_free_result(metadata);
  }

  ~MysqlCursor() override { Finish(); }

  // Binds the result buffers; an error closes the cursor.
  absl::Status Start() {
    if (lease_ == nullptr || row_ == nullptr) return absl::OkStatus();
    if (mysql_stmt_bind_result(stmt_, row_->binds()) != 0) {
      absl::Status status =
          Failure(*lease_, ErrorOf(stmt_, (*lease_)->mysql()));
      Finish();
      return status;
    }
    return absl::OkStatus();
  }

  const v1::Schema& schema() const override { return schema_; }

  absl::StatusOr<bool> Next(int max_rows, size_t max_bytes,
                            v1::RowBatch* batch) override {
    const int columns = schema_.columns_size();
    std::vector<ColumnBuilder> builders = StartBatch(columns, batch);
    if (lease_ == nullptr) return false;  // exhausted (or failed) before
    if (IsCancelled(cancel_)) {
      Finish();
      return CancelledStatus();
    }
    int rows = 0;
    size_t bytes = 0;
    bool more = true;
    absl::Status failure;
    {
      ScopedInterrupt armed(cancel_, killer_->Interrupter());
      if (!armed.ok()) failure = CancelledStatus();
      while (failure.ok()) {
        if (!pending_row_) {
          const int rc = row_->Fetch(stmt_);
          if (rc == MYSQL_NO_DATA) {
            more = false;
            break;
          }
          if (rc != 0) {
            // The error packet (or the lost link) ended the result, and
            // with it the statement: no further results follow.
            exhausted_ = true;
            failed_ = true;
            failure = Failure(*lease_, ErrorOf(stmt_, (*lease_)->mysql()));
            break;
          }
          if (IsCancelled(cancel_)) {
            // SLEEP() and some others answer a KILL QUERY with a result.
            failure = CancelledStatus();
            break;
          }
        }
        // The row just fetched does not fit: it stays in the buffers and
        // opens the next batch. Fetching one row ahead is how we know to
        // answer "no more rows" with the last full batch.
        if (rows > 0 && ((max_rows > 0 && rows >= max_rows) ||
                         (max_bytes > 0 && bytes >= max_bytes))) {
          pending_row_ = true;
          break;
        }
        pending_row_ = false;
        bytes += row_->AppendTo(builders, rows);
        ++rows;
      }
    }
    if (!failure.ok()) {
      if (killer_->fired()) {
        failure = WithSqlState(CancelledStatus(), SqlStateOf(failure));
      }
      Finish();
      batch->Clear();
      return failure;
    }
    batch->set_row_count(rows);
    for (ColumnBuilder& builder : builders) builder.Finish(rows);
    if (!schema_settled_) {
      schema_settled_ = true;
      SettleSchema(builders, not_null_, &schema_);
    }
    if (!more) {
      exhausted_ = true;
      Finish();
    }
    return more;
  }

 private:
  // Ends the statement and gives the backend back at once (unless
  // borrowed). A result not read to its end is stopped with KILL QUERY and
  // the rest flushed: the connection cannot run anything else while a
  // result is pending.
  void Finish() {
    if (lease_ == nullptr) return;
    MysqlBackend& backend = **lease_;
    MYSQL* m = backend.mysql();
    bool broken = false;
    if (!exhausted_) {
      killer_->Kill();  // no-op if the interrupter already did
      if (killer_->cut()) {
        broken = true;
      } else {
        mysql_stmt_free_result(stmt_);  // reads what is left in flight
        const unsigned int code = mysql_errno(m);
        broken = BreaksBackend(code);
        if (code != 0) failed_ = true;  // the KILL's error ended it
      }
      exhausted_ = true;
    }
    if (!broken && !failed_) broken = !SkipMoreResults(stmt_);
    if (!broken) mysql_stmt_free_result(stmt_);
    if (!broken && killer_->fired()) {
      broken = !SettleAfterKill(backend, *killer_);
    }
    if (broken) lease_->MarkBroken();
    owned_.Release();  // nothing when borrowed
    lease_ = nullptr;
  }

  Lease owned_;
  Lease* lease_;            // &owned_ or borrowed; null once finished
  MYSQL_STMT* const stmt_;  // owned by the backend's statement cache
  const std::unique_ptr<Killer> killer_;
  CancelSignal* const cancel_;
  std::unique_ptr<ResultRow> row_;
  v1::Schema schema_;
  std::vector<bool> not_null_;  // declared NOT NULL, per column
  bool schema_settled_ = false;
  bool pending_row_ = false;  // the buffers hold a row not sent yet
  bool exhausted_ = false;    // nothing more to read for this result
  bool failed_ = false;       // the result ended with an error
};

// ---------------------------------------------------------------------------
// Statements on a claimed backend, for one-shot calls and pinned backends

// Runs `step` (which blocks in the server) with `cancel` armed to KILL
// QUERY the backend's statement. After a KILL, whatever `step` answered,
// the call is CANCELLED and the backend is settled (or closed).
absl::Status Run(Lease& lease, Killer& killer, CancelSignal* cancel,
                 const std::function<absl::Status()>& step) {
  absl::Status status;
  {
    ScopedInterrupt armed(cancel, killer.Interrupter());
    if (!armed.ok()) return CancelledStatus();
    status = step();
  }
  if (killer.fired()) {
    if (!SettleAfterKill(*lease, killer)) lease.MarkBroken();
    return WithSqlState(CancelledStatus(), SqlStateOf(status));
  }
  return status;
}

// Executes a prepared statement to its end, dropping any rows.
absl::Status RunPrepared(Lease& lease, MYSQL_STMT* stmt, const std::string& sql,
                         ExecuteResult* result) {
  MYSQL* m = lease->mysql();
  if (mysql_stmt_execute(stmt) != 0) {
    const MysqlError error = ErrorOf(stmt, m);
    if (error.code != CR_NEW_STMT_METADATA) return Failure(lease, error);
    // It ran; only its rows, dropped here anyway, cannot be decoded.
    return DropStaleStatement(*lease, stmt, sql) ? absl::OkStatus()
                                                 : Failure(lease, ErrorOf(m));
  }
  while (true) {
    if (mysql_stmt_field_count(stmt) > 0) {
      mysql_stmt_free_result(stmt);  // reads and drops the rows
      if (mysql_errno(m) != 0) return Failure(lease, ErrorOf(m));
    } else {
      result->rows_affected +=
          static_cast<int64_t>(mysql_stmt_affected_rows(stmt));
      const uint64_t id = mysql_stmt_insert_id(stmt);
      if (id != 0) result->last_insert_id = static_cast<int64_t>(id);
    }
    if (!mysql_stmt_more_results(stmt)) break;
    const int rc = mysql_stmt_next_result(stmt);
    if (rc < 0) break;
    if (rc > 0) return Failure(lease, ErrorOf(stmt, m));
  }
  return absl::OkStatus();
}

// Runs every statement of `sql` (a script) in order, over the text
// protocol. Each statement commits on its own (autocommit) unless the
// script says BEGIN (or a session's transaction is open); the server stops
// at the first failure, leaving the statements before it done.
absl::Status RunScript(Lease& lease, const std::string& sql,
                       ExecuteResult* result) {
  MYSQL* m = lease->mysql();
  int index = 1;
  int rc = mysql_real_query(m, sql.data(), sql.size());
  while (true) {
    if (rc != 0) {
      absl::Status status = Failure(lease, ErrorOf(m));
      if (index == 1) return status;
      return WithSqlState(
          absl::Status(status.code(), absl::StrCat("statement ", index, ": ",
                                                   status.message())),
          SqlStateOf(status));
    }
    if (mysql_field_count(m) > 0) {
      // A SELECT in a script: its rows are read and dropped.
      MYSQL_RES* rows = mysql_use_result(m);
      if (rows == nullptr) return Failure(lease, ErrorOf(m));
      while (mysql_fetch_row(rows) != nullptr) {
      }
      const MysqlError error = ErrorOf(m);
      mysql_free_result(rows);
      if (error.code != 0) return Failure(lease, error);
    } else {
      result->rows_affected += static_cast<int64_t>(mysql_affected_rows(m));
      const uint64_t id = mysql_insert_id(m);
      if (id != 0) result->last_insert_id = static_cast<int64_t>(id);
    }
    const int next = mysql_next_result(m);
    if (next < 0) break;  // no more results
    ++index;
    rc = next;
  }
  return absl::OkStatus();
}

// Runs `sql` to its end on the lease's backend: a script over the text
// protocol without parameters, one prepared statement with them.
absl::StatusOr<ExecuteResult> ExecuteOn(
    Lease& lease, const std::shared_ptr<const Target>& target,
    const std::string& sql, const v1::Params& params, const BoundSql& bound,
    CancelSignal* cancel) {
  const bool has_params =
      params.positional_size() > 0 || !params.named().empty();
  ExecuteResult result;
  Killer killer(target, *lease);
  absl::Status status = Run(lease, killer, cancel, [&]() -> absl::Status {
    if (!has_params) {
      if (IsCancelled(cancel)) return CancelledStatus();
      return RunScript(lease, sql, &result);
    }
    ParamBinds binds(bound.values);
    absl::StatusOr<MYSQL_STMT*> stmt = PrepareAndBind(lease, bound, binds);
    if (!stmt.ok()) return stmt.status();
    if (IsCancelled(cancel)) return CancelledStatus();
    return RunPrepared(lease, *stmt, bound.sql, &result);
  });
  if (!status.ok()) return status;
  return result;
}

// Prepares and executes `bound` on the lease's backend and returns its
// cursor, which owns the lease, or borrows it when `pinned`.
absl::StatusOr<std::unique_ptr<ResultCursor>> QueryOn(
    Lease& lease, bool pinned, const std::shared_ptr<const Target>& target,
    const BoundSql& bound, CancelSignal* cancel) {
  ParamBinds binds(bound.values);
  auto killer = std::make_unique<Killer>(target, *lease);
  MYSQL_STMT* stmt = nullptr;
  for (int attempt = 0;; ++attempt) {
    // Armed while preparing too: a prepare waits for metadata locks.
    absl::StatusOr<MYSQL_STMT*> prepared;
    bool executed = false;
    int rc = 0;
    {
      ScopedInterrupt armed(cancel, killer->Interrupter());
      if (!armed.ok()) return CancelledStatus();
      prepared = PrepareAndBind(lease, bound, binds);
      // A KILL sent while the backend sat between prepare and execute
      // would find nothing to kill.
      if (prepared.ok() && !IsCancelled(cancel)) {
        rc = mysql_stmt_execute(*prepared);
        executed = true;
      }
    }
    absl::Status status;
    if (!prepared.ok()) {
      status = prepared.status();
    } else if (!executed) {
      status = CancelledStatus();
    } else if (rc == 0) {
      stmt = *prepared;
      break;
    } else {
      const MysqlError error = ErrorOf(*prepared, lease->mysql());
      if (error.code == CR_NEW_STMT_METADATA && !killer->fired()) {
        if (!DropStaleStatement(*lease, *prepared, bound.sql)) {
          return Failure(lease, ErrorOf(lease->mysql()));
        }
        // Running a read again is harmless; anything else already ran
        // once and must not run twice.
        if (attempt == 0 && LooksLikeRead(bound.sql)) continue;
        return absl::AbortedError(
            "the statement ran, but its result columns changed since it "
            "was prepared (a table or procedure was altered) and its rows "
            "could not be read; run it again");
      }
      status = Failure(lease, error);
    }
    if (!killer->fired()) return status;
    if (!SettleAfterKill(*lease, *killer)) lease.MarkBroken();
    return WithSqlState(CancelledStatus(), SqlStateOf(status));
  }
  // A KILL that fired during a successful execute leaves a result
  // pending: the cursor's first Next sees the signal and cleans up.
  auto cursor =
      pinned ? std::make_unique<MysqlCursor>(Lease(), &lease, stmt,
                                             std::move(killer), cancel)
             : std::make_unique<MysqlCursor>(std::move(lease), nullptr, stmt,
                                             std::move(killer), cancel);
  absl::Status started = cursor->Start();
  if (!started.ok()) return started;
  return std::unique_ptr<ResultCursor>(std::move(cursor));
}

// ---------------------------------------------------------------------------
// Pinned backends

// One backend held by a session (see PinnedBackend). Statements go through
// the one-shot paths (QueryOn, ExecuteOn), with the same prepared statement
// cache and KILL QUERY on cancel.
class MysqlPinned : public PinnedBackend {
 public:
  MysqlPinned(std::shared_ptr<const Target> target, Lease lease)
      : target_(std::move(target)), lease_(std::move(lease)) {}

  // RecycleBackend rolls back what is still open as the lease goes.
  ~MysqlPinned() override = default;

  absl::Status Begin(const TransactionOptions& options,
                     CancelSignal* cancel) override {
    if (options.deferrable) {
      return absl::InvalidArgumentError(
          "MySQL has no deferrable transactions (a PostgreSQL option)");
    }
    if (InTransaction()) return TransactionAlreadyOpenError();
    // SET TRANSACTION (neither GLOBAL nor SESSION) applies to the next
    // transaction only; both go in one round trip.
    std::string sql;
    const absl::string_view isolation = IsolationLevelSql(options.isolation);
    if (!isolation.empty()) {
      sql = absl::StrCat("SET TRANSACTION ISOLATION LEVEL ", isolation, "; ");
    }
    absl::StrAppend(&sql, options.read_only ? "START TRANSACTION READ ONLY"
                                            : "START TRANSACTION");
    return ExecuteOn(lease_, target_, sql, {}, BoundSql{}, cancel).status();
  }

  absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params,
      CancelSignal* cancel) override {
    absl::StatusOr<BoundSql> bound = ResolveParams(sql, params);
    if (!bound.ok()) return bound.status();
    if (IsCancelled(cancel)) return CancelledStatus();
    return QueryOn(lease_, /*pinned=*/true, target_, *bound, cancel);
  }

  absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                        const v1::Params& params,
                                        CancelSignal* cancel) override {
    absl::StatusOr<BoundSql> bound = ResolveParams(sql, params);
    if (!bound.ok()) return bound.status();
    if (IsCancelled(cancel)) return CancelledStatus();
    return ExecuteOn(lease_, target_, sql, params, *bound, cancel);
  }

  bool InTransaction() override {
    // A broken backend's transaction is gone with its link.
    if (lease_.broken()) return false;
    MYSQL* m = lease_->mysql();
    // An error packet carries no server status, so after an error the flag
    // may still show a transaction the error ended (a deadlock rolls back
    // the whole transaction); a no-op's answer brings it up to date.
    if (mysql_errno(m) != 0 && mysql_real_query(m, "DO 0", 4) != 0) {
      if (BreaksBackend(mysql_errno(m))) {
        lease_.MarkBroken();
        return false;
      }
    }
    return (m->server_status & SERVER_STATUS_IN_TRANS) != 0;
  }

  bool broken() const override { return lease_.broken(); }

 private:
  const std::shared_ptr<const Target> target_;
  Lease lease_;
};

// ---------------------------------------------------------------------------
// Database

class MysqlDatabase : public SinglePoolDatabase<MysqlBackend> {
 public:
  MysqlDatabase(std::shared_ptr<const Target> target,
                std::shared_ptr<Pool> pool)
      : SinglePoolDatabase(std::move(pool)), target_(std::move(target)) {}

  absl::StatusOr<std::unique_ptr<ResultCursor>> Query(
      const std::string& sql, const v1::Params& params, Reservation slot,
      CancelSignal* cancel) override {
    if (!Owns(slot)) return NotOurs();
    absl::StatusOr<BoundSql> bound = ResolveParams(sql, params);
    if (!bound.ok()) return bound.status();
    if (IsCancelled(cancel)) return CancelledStatus();
    absl::StatusOr<Lease> lease = pool_->Claim(std::move(slot));
    if (!lease.ok()) return lease.status();
    return QueryOn(*lease, /*pinned=*/false, target_, *bound, cancel);
  }

  // ExecuteOn, refusing (and rolling back) a transaction left open.
  absl::StatusOr<ExecuteResult> Execute(const std::string& sql,
                                        const v1::Params& params,
                                        Reservation slot,
                                        CancelSignal* cancel) override {
    if (!Owns(slot)) return NotOurs();
    absl::StatusOr<BoundSql> bound = ResolveParams(sql, params);
    if (!bound.ok()) return bound.status();
    if (IsCancelled(cancel)) return CancelledStatus();
    absl::StatusOr<Lease> lease = pool_->Claim(std::move(slot));
    if (!lease.ok()) return lease.status();
    absl::StatusOr<ExecuteResult> result =
        ExecuteOn(*lease, target_, sql, params, *bound, cancel);
    if (!result.ok()) return result;
    MYSQL* m = (*lease)->mysql();
    if ((m->server_status & SERVER_STATUS_IN_TRANS) != 0) {
      // The write is not acknowledged, so it must not survive either: a
      // later user of this backend would commit it unknowingly.
      if (mysql_rollback(m) != 0) lease->MarkBroken();
      return TransactionLeftOpenError();
    }
    return result;
  }

  absl::StatusOr<std::unique_ptr<PinnedBackend>> Pin(
      Reservation slot) override {
    if (!Owns(slot)) return NotOurs();
    absl::StatusOr<Lease> lease = pool_->Claim(std::move(slot));
    if (!lease.ok()) return lease.status();
    return std::unique_ptr<PinnedBackend>(
        new MysqlPinned(target_, *std::move(lease)));
  }

 private:
  const std::shared_ptr<const Target> target_;
};

}  // namespace

namespace mysql_internal {

RewrittenSql RewriteNamedParams(absl::string_view sql) {
  RewrittenSql out;
  out.sql.reserve(sql.size());
  bool pyformat = false;
  const size_t n = sql.size();
  size_t i = 0;
  auto copy_to = [&](size_t end) {
    end = std::min(end, n);
    out.sql.append(sql.data() + i, end - i);
    i = end;
  };
  while (i < n) {
    const char c = sql[i];
    if (c == '\'' || c == '"' || c == '`') {
      // A quoted string or identifier: a doubled quote stays inside, and
      // in strings a backslash escapes the next character.
      size_t j = i + 1;
      while (j < n) {
        if (sql[j] == '\\' && c != '`') {
          j += 2;
        } else if (sql[j] == c) {
          if (j + 1 < n && sql[j + 1] == c) {
            j += 2;
          } else {
            ++j;
            break;
          }
        } else {
          ++j;
        }
      }
      copy_to(j);
    } else if (c == '#' || StartsDashComment(sql, i)) {
      const size_t end = sql.find('\n', i);
      copy_to(end == absl::string_view::npos ? n : end + 1);
    } else if (sql.substr(i, 2) == "/*") {
      const size_t end = sql.find("*/", i + 2);
      copy_to(end == absl::string_view::npos ? n : end + 2);
    } else if (c == '?') {
      ++out.question_marks;
      copy_to(i + 1);
    } else if (c == ':') {
      // SQLAlchemy's rule: not after a word character, a colon or a
      // backslash (`@a:=1`, `lbl:`), and not followed by a colon.
      const char before = i > 0 ? sql[i - 1] : ' ';
      size_t j = i + 1;
      while (j < n && IsWordByte(sql[j])) ++j;
      if (j > i + 1 && !IsWordByte(before) && before != ':' && before != '\\' &&
          (j == n || sql[j] != ':')) {
        out.names.emplace_back(sql.substr(i + 1, j - i - 1));
        out.spellings.emplace_back(sql.substr(i, j - i));
        out.sql.push_back('?');
        i = j;
      } else {
        copy_to(i + 1);
      }
    } else if (c == '%' && sql.substr(i, 2) == "%%") {
      copy_to(i + 2);  // pymysql's escaped percent sign
    } else if (c == '%' && sql.substr(i, 2) == "%(") {
      const size_t close = sql.find(')', i + 2);
      if (close != absl::string_view::npos && close > i + 2 && close + 1 < n &&
          sql[close + 1] == 's') {
        out.names.emplace_back(sql.substr(i + 2, close - i - 2));
        out.spellings.emplace_back(sql.substr(i, close + 2 - i));
        out.sql.push_back('?');
        pyformat = true;
        i = close + 2;
      } else {
        copy_to(i + 1);
      }
    } else {
      copy_to(i + 1);
    }
  }
  // SQL written for pymysql's pyformat goes through Python's % operator,
  // so a literal percent sign is spelled %% there, strings included.
  if (pyformat) absl::StrReplaceAll({{"%%", "%"}}, &out.sql);
  return out;
}

}  // namespace mysql_internal

absl::StatusOr<std::unique_ptr<Database>> OpenMysqlDatabase(
    const config::ConnectionSpec& spec, const DriverContext& context) {
  if (spec.sql.dialect != "mysql" && spec.sql.dialect != "mariadb") {
    return absl::InvalidArgumentError(
        absl::StrCat("connection ", spec.name, ": dialect '", spec.sql.dialect,
                     "' is not mysql or mariadb"));
  }
  InitLibrary();
  absl::StatusOr<Target> parsed = TargetFromSpec(spec);
  if (!parsed.ok()) return parsed.status();
  auto target = std::make_shared<const Target>(*std::move(parsed));

  Pool::Hooks hooks;
  hooks.open = [target] { return OpenBackend(*target); };
  hooks.recycle = &RecycleBackend;
  hooks.ping = &PingBackend;
  std::shared_ptr<Pool> pool =
      Pool::Create(PoolOptionsFor(spec, "backend", context), std::move(hooks));

  // Opening one backend now makes a bad address or password fail at Connect.
  {
    absl::StatusOr<Lease> first = pool->Acquire();
    if (!first.ok()) {
      pool->Close();
      return first.status();
    }
  }
  return std::unique_ptr<Database>(
      new MysqlDatabase(std::move(target), std::move(pool)));
}

}  // namespace connbroker::server
