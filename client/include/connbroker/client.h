// The connbroker C++ client: st.connection(...) against a shared connbroker
// daemon. A Client owns the process's gRPC channel; Connect() returns a
// Connection handle that runs queries through the daemon's shared connection.
//
//   auto client = connbroker::Client::Create({});
//   auto conn = (*client)->Connect({.name = "analytics", .type = "sql"});
//   auto result = conn->Query("SELECT id, name FROM users WHERE id = ?",
//                             {.params = {int64_t{42}}, .ttl =
//                             absl::Minutes(10)});
//
// Calls travel over the daemon's Session streams, kept open and reused by
// the Client (one message each way per call). Connection::Begin() returns a
// Transaction that holds one stream, and with it one backend connection,
// until it commits or rolls back; Client::OpenSession() gives a caller a
// stream of its own, to pipeline requests or to run SQL BEGIN ... COMMIT.
#ifndef CONNBROKER_CLIENT_CLIENT_H_
#define CONNBROKER_CLIENT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "connbroker/result.h"
#include "connbroker/v1/broker.pb.h"
#include "connbroker/v1/session.pb.h"
#include "grpcpp/support/status.h"

namespace connbroker {

// The daemon's address when none is given: $CONNBROKER_TARGET when set,
// else "unix:" + ($XDG_RUNTIME_DIR or "/tmp/connbroker-<uid>") +
// "/connbroker.sock", the path the daemon listens on by default.
std::string DefaultTarget();

// Turns a gRPC status into an absl::Status with the same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

// The daemon's machine-readable account of an error a call returned: why
// (SQL, BACKEND, POOL_EXHAUSTED, ...), whether trying again may help, and the
// database's SQLSTATE where it has one ("42601", "23505", ...). nullopt for
// errors the daemon did not explain (the transport's own, say).
std::optional<v1::ErrorDetail> ErrorDetailOf(const absl::Status& status);

// The option structs below are meant for designated initialisers
// (`{.name = "db"}`); every member has an initialiser, so skipping members
// draws no -Wmissing-field-initializers warning.
struct ClientOptions {
  // "unix:/path/to/socket" or "host:port"; empty means DefaultTarget().
  std::string target{};
  // Deadline of every call that does not set its own.
  absl::Duration default_deadline = absl::Seconds(30);
  // Sent on every call as "connbroker-session"; connections whose secrets
  // section says scope = "session" are private to it. Empty: a random id per
  // Client.
  std::string session_id{};

  // TLS, for a daemon listening on TCP with [tls]: on when `tls` is set or
  // any PEM below is given. root_certs_pem: the CA certificates the daemon's
  // certificate is checked against (empty: the system's).
  bool tls = false;
  std::string root_certs_pem{};
  // A client certificate chain and its private key (PEM), for a daemon that
  // asks for one ([tls] client_ca_file). Both or neither.
  std::string client_cert_pem{};
  std::string client_key_pem{};
  // Sent on every call as "authorization: Bearer <token>"; required on TCP,
  // optional on the Unix socket (where it limits the calls to what the
  // token allows). Empty: none.
  std::string bearer_token{};

  // Connection calls go over kept Session streams: one message each way
  // per call. false: a one-shot RPC per call, as before streams existed (a
  // daemon without Session gets those anyway: the client falls back by
  // itself when the daemon answers UNIMPLEMENTED). Transactions and
  // Sessions always use streams.
  bool use_sessions = true;
  // How many idle streams the Client keeps for reuse; 0: the default,
  // kDefaultMaxIdleSessions. Calls running at once each hold one, and past
  // this many a finished call closes its stream instead of keeping it.
  int max_idle_sessions = 0;
};

// Chosen by measurement (tests/bench, 1 and 8 threads querying): see
// client.cc, where the numbers are.
inline constexpr int kDefaultMaxIdleSessions = 8;

// st.connection(name, type=None, max_entries=None, ttl=None, **kwargs).
struct ConnectOptions {
  std::string name{};  // a [connections.<name>] section, or "env:VAR"
  std::string type{};  // "sql", a Streamlit class path, or empty
  std::optional<int64_t> max_entries{};
  std::optional<absl::Duration> ttl{};
  std::map<std::string, Value> kwargs{};  // dotted keys for nested tables
};

struct QueryOptions {
  std::vector<Value> params{};                  // ?, ?1, $1
  std::map<std::string, Value> named_params{};  // :name, @name
  std::optional<absl::Duration> ttl{};          // cache the result this long
  int chunk_rows = 0;                           // rows per batch; 0: server's
  std::optional<absl::Duration> deadline{};     // else the client's default
};

struct ExecuteResult {
  int64_t rows_affected = 0;
  int64_t last_insert_id = 0;
  std::string handle{};
};

struct ResetResult {
  std::string handle{};
  int64_t backends_closed = 0;
  int64_t cached_results_dropped = 0;
};

// The isolation level of a Transaction; kDefault is the database's own.
enum class Isolation {
  kDefault,
  kReadUncommitted,
  kReadCommitted,
  kRepeatableRead,
  kSerializable,
};

struct TransactionOptions {
  Isolation isolation = Isolation::kDefault;
  bool read_only = false;
  // PostgreSQL's DEFERRABLE (with kSerializable and read_only); databases
  // without it refuse the Begin.
  bool deferrable = false;
  // Deadline of each call of the transaction that sets none (Begin itself,
  // Execute, Commit, Rollback, and Query without QueryOptions::deadline);
  // unset: the client's default.
  std::optional<absl::Duration> deadline{};
};

class ClientCore;
class ConnectionState;
class Transaction;
class Session;

// Receives a streamed query result batch by batch (Connection::QueryBatches).
// `batch` holds the columns and only the rows of the batch just received;
// the same Result is reused for the next batch. A non-OK return cancels the
// query and becomes QueryBatches' result.
using BatchCallback = std::function<absl::Status(const Result& batch)>;

// A handle to one of the daemon's shared connections, as returned by
// Client::Connect. Cheap to copy: copies share one state, which remembers the
// ConnectRequest so that a handle the daemon no longer knows (it restarted)
// is replaced by Connecting again and the call retried once. Thread-safe:
// copies may be used from any threads at once, and may outlive the Client.
class Connection {
 public:
  Connection(const Connection&) = default;
  Connection& operator=(const Connection&) = default;
  Connection(Connection&&) = default;
  Connection& operator=(Connection&&) = default;

  // The current handle (it changes after the daemon restarted).
  std::string handle() const;
  std::string name() const;
  std::string type() const;
  // Where it points, secrets masked: "sqlite:////srv/app.db".
  std::string description() const;
  // True when Connect created the connection, false when it joined one.
  bool created() const;
  // "global" or "session".
  std::string scope() const;

  // Runs a statement that returns rows and collects the whole result.
  absl::StatusOr<Result> Query(std::string sql,
                               const QueryOptions& options = {}) const;

  // Runs a statement that returns rows and hands them over batch by batch,
  // so memory stays bounded whatever the result size. `on_batch` is first
  // called with zero rows as soon as the schema arrives (so a writer can
  // print a header even for an empty result), then once per batch. Returns
  // the summary.
  absl::StatusOr<QuerySummary> QueryBatches(
      std::string sql, const QueryOptions& options,
      const BatchCallback& on_batch) const;

  // Runs a statement for its effect.
  absl::StatusOr<ExecuteResult> Execute(
      std::string sql, const std::vector<Value>& params = {},
      const std::map<std::string, Value>& named_params = {}) const;

  // Drops the connection's backend connections and cached results; the next
  // use reconnects. `counts`, when given, receives what was dropped.
  absl::Status Reset(ResetResult* counts = nullptr) const;

  // Begins a transaction on this connection (see Transaction). Each call
  // above stands alone: a statement that leaves a transaction open (a bare
  // BEGIN) fails with FAILED_PRECONDITION and is rolled back.
  absl::StatusOr<Transaction> Begin(
      const TransactionOptions& options = {}) const;

 private:
  friend class Client;
  friend class Session;
  explicit Connection(std::shared_ptr<ConnectionState> state)
      : state_(std::move(state)) {}

  std::shared_ptr<ConnectionState> state_;
};

// A database transaction on one of the daemon's connections, from
// Connection::Begin to Commit or Rollback. It holds one Session stream, and
// through it one backend connection of the daemon, for its whole life;
// destroyed while still open it rolls back (or, if its stream broke, just
// drops it: the daemon rolls back when a stream ends). Movable, not
// copyable; one thread at a time, as with a database connection.
class Transaction {
 public:
  Transaction(Transaction&& other) noexcept;
  // Rolls back what this transaction held, then takes `other`'s.
  Transaction& operator=(Transaction&& other) noexcept;
  ~Transaction();

  // Statements inside the transaction: they see its own writes. Once it
  // ended (Commit, Rollback, a COMMIT or ROLLBACK sent as SQL) every call
  // fails with FAILED_PRECONDITION; after the daemon rolled it back on its
  // own (idle past transactions.idle_timeout) every call but Rollback fails
  // with ABORTED and the daemon's reason.
  absl::StatusOr<Result> Query(std::string sql,
                               const QueryOptions& options = {});
  absl::StatusOr<QuerySummary> QueryBatches(std::string sql,
                                            const QueryOptions& options,
                                            const BatchCallback& on_batch);
  absl::StatusOr<ExecuteResult> Execute(
      std::string sql, const std::vector<Value>& params = {},
      const std::map<std::string, Value>& named_params = {});

  // Ends the transaction. A failed Commit (a serialization failure, say)
  // leaves it open when the database does: roll it back.
  absl::Status Commit();
  absl::Status Rollback();

  // True until the transaction ended.
  bool active() const;
  // The connection it runs on.
  std::string handle() const;

 private:
  friend class Connection;
  class Impl;
  explicit Transaction(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

// One Session stream held by its owner, for callers that want a stream
// explicitly: to pipeline requests (Send several, then Receive their answers,
// which come in the order sent), or to run a transaction as SQL (BEGIN ...
// COMMIT sent as statements), as `connbroker shell` does. Destroying it
// ends the stream, and the daemon rolls back a transaction left open.
// Movable, not copyable; one thread at a time. Once the stream broke
// (broken()), every call fails: open another Session.
class Session {
 public:
  Session(Session&& other) noexcept;
  Session& operator=(Session&& other) noexcept;
  ~Session();

  // Pipelining. Send gives `request` the session's next id, and when it
  // sets no timeout_millis the client's default deadline, writes it, and
  // returns the id without waiting for the answer. Receive returns the next
  // message: part or all of the answer to the oldest request not yet fully
  // answered (an answer ends with the message holding a summary, or any
  // field numbered 16 and above), or a notice (id 0). A request the daemon
  // refused is answered by a message with `error`: non-OK returns are the
  // stream's own failures. Receive waits at most `timeout` (default: the
  // client's default deadline); past it the stream is cancelled (a blocked
  // read cannot stop otherwise) and broken.
  absl::StatusOr<uint64_t> Send(v1::SessionRequest request);
  absl::StatusOr<v1::SessionResponse> Receive(
      std::optional<absl::Duration> timeout = std::nullopt);

  // Blocking forms: one statement on `connection` and its whole answer, as
  // Connection's calls (and like them, a handle the daemon forgot is
  // replaced and the call retried once). FAILED_PRECONDITION while answers
  // to Send are outstanding.
  absl::StatusOr<Result> Query(const Connection& connection, std::string sql,
                               const QueryOptions& options = {});
  absl::StatusOr<QuerySummary> QueryBatches(const Connection& connection,
                                            std::string sql,
                                            const QueryOptions& options,
                                            const BatchCallback& on_batch);
  absl::StatusOr<ExecuteResult> Execute(
      const Connection& connection, std::string sql,
      const std::vector<Value>& params = {},
      const std::map<std::string, Value>& named_params = {});

  // Whether the session has a transaction open (BEGIN sent as SQL, say), as
  // the daemon's last TransactionState said.
  bool transaction_open() const;
  // The notice the daemon sent unasked while a blocking call waited (it
  // rolled the session's transaction back), as an ABORTED status; OK when
  // none. Taking it clears it.
  absl::Status TakeNotice();
  bool broken() const;

 private:
  friend class Client;
  class Impl;
  explicit Session(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

// The process's link to the connbroker daemon: one gRPC channel, created
// once and kept (a channel costs milliseconds to build), shared by every
// Connection made from it. Create() does no network I/O; the first call
// connects. Thread-safe: every method may be called from any thread.
class Client {
 public:
  static absl::StatusOr<std::unique_ptr<Client>> Create(
      ClientOptions options = {});

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // st.connection(...): gets or creates the daemon's shared connection.
  absl::StatusOr<Connection> Connect(const ConnectOptions& options) const;

  // The global connections and this client's session's; `all_sessions`
  // also every other session's (an admin call).
  absl::StatusOr<v1::ListConnectionsResponse> ListConnections(
      bool all_sessions = false) const;
  absl::StatusOr<v1::GetStatsResponse> Stats() const;

  // A Connection for a handle obtained elsewhere (another process, the
  // `connbroker connect` command). No call is made; name(), type() and the
  // like are empty. Having no ConnectRequest to repeat, it cannot recover a
  // handle the daemon forgot: such calls fail with NOT_FOUND.
  Connection Attach(const std::string& handle) const;

  // A Session stream of the caller's own (see Session). No I/O: the stream
  // starts with its first request.
  Session OpenSession() const;

  // Resets a connection known only by its handle (see Connection::Reset).
  absl::StatusOr<ResetResult> ResetHandle(const std::string& handle) const;

  // Waits until the channel is connected to the daemon, or fails with
  // UNAVAILABLE after `timeout`.
  absl::Status WaitForReady(absl::Duration timeout) const;

  const std::string& target() const;
  const std::string& session_id() const;

 private:
  explicit Client(std::shared_ptr<ClientCore> core);

  std::shared_ptr<ClientCore> core_;
};

}  // namespace connbroker

#endif  // CONNBROKER_CLIENT_CLIENT_H_
