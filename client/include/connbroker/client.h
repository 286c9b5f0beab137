// The connbroker C++ client: st.connection(...) against a shared connbroker
// daemon. A Client owns the process's gRPC channel; Connect() returns a
// Connection handle that runs queries through the daemon's shared connection.
//
//   auto client = connbroker::Client::Create({});
//   auto conn = (*client)->Connect({.name = "analytics", .type = "sql"});
//   auto result = conn->Query("SELECT id, name FROM users WHERE id = ?",
//                             {.params = {int64_t{42}}, .ttl =
//                             absl::Minutes(10)});
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
};

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

class ClientCore;
class ConnectionState;

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

 private:
  friend class Client;
  explicit Connection(std::shared_ptr<ConnectionState> state)
      : state_(std::move(state)) {}

  std::shared_ptr<ConnectionState> state_;
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
