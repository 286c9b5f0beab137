// The C++ client's gRPC side: the shared channel, per-call deadlines and
// session metadata, the mapping of the daemon's errors to absl::Status, the
// recovery of handles a restarted daemon no longer knows, and Connection's
// calls over kept Session streams or one-shot RPCs.
//
// Choices the header leaves open, made here:
// - kDefaultMaxIdleSessions = 8. Measured with a SELECT 1 loop on one
//   Client against a local daemon (2 shared cores, Unix socket), counting
//   the streams the Client opened in 3 s:
//     1 thread:  1 stream whatever the cap; ~160 us a call either way;
//     8 threads: cap 1 opened 531 streams (about 1 call in 90 closed one,
//       a round trip, and opened another), caps 2, 4 and 8 opened 8.
//   A steady loop keeps each thread's stream checked out, so a small cap
//   suffices there; the cap matters when callers return at once (a burst
//   ends), and 8 keeps a stream for each of 8 such callers. Throughput
//   differences were within this machine's noise. A constant rather than
//   hardware threads: idle streams count against the daemon's
//   limits.max_sessions (1024) across every client process, and a 64-core
//   host would otherwise keep 64 per process.
// - A statement that leaves a transaction open on a pooled stream (a bare
//   BEGIN) is rolled back there and refused, as the one-shot Execute is:
//   the next call would run on another stream, outside it.
#include "connbroker/client.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/src/client_core.h"
#include "client/src/session_stream.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/channel_arguments.h"

namespace connbroker {

namespace {

constexpr char kSessionKey[] = "connbroker-session";
constexpr char kAuthorizationKey[] = "authorization";
constexpr char kErrorDetailKey[] = "connbroker-error-bin";
// Where ErrorDetailOf(absl::Status) finds the daemon's detail.
constexpr char kErrorDetailPayload[] = "connbroker.v1/ErrorDetail";
// Matches the daemon's batch limit (about 1 MiB a batch) with room to spare;
// gRPC's default of 4 MiB would refuse a large single-row batch.
constexpr int kMaxReceiveMessageBytes = 16 * 1024 * 1024;

std::string RandomSessionId() {
  absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen),
                         absl::Uniform<uint64_t>(gen));
}

std::optional<v1::ErrorDetail> TrailerDetail(
    const grpc::ClientContext& context) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(kErrorDetailKey);
  if (it == trailers.end()) return std::nullopt;
  v1::ErrorDetail detail;
  if (!detail.ParseFromArray(it->second.data(),
                             static_cast<int>(it->second.size()))) {
    return std::nullopt;
  }
  return detail;
}

v1::ConnectRequest ToConnectRequest(const ConnectOptions& options) {
  v1::ConnectRequest request;
  request.set_name(options.name);
  request.set_type(options.type);
  if (options.max_entries.has_value()) {
    request.set_max_entries(*options.max_entries);
  }
  if (options.ttl.has_value()) {
    request.set_ttl_seconds(absl::ToDoubleSeconds(*options.ttl));
  }
  for (const auto& [key, value] : options.kwargs) {
    (*request.mutable_kwargs())[key] = ValueToProto(value);
  }
  return request;
}

}  // namespace

// ---------------------------------------------------------------------------
// Errors and conversions (client_core.h)

absl::Status ErrorStatus(absl::StatusCode code, absl::string_view message,
                         const v1::ErrorDetail* detail) {
  absl::Status status(code, message);
  if (detail != nullptr && !status.ok()) {
    status.SetPayload(kErrorDetailPayload,
                      absl::Cord(detail->SerializeAsString()));
  }
  return status;
}

absl::Status FromSessionError(const v1::SessionError& error) {
  absl::StatusCode code = static_cast<absl::StatusCode>(error.code());
  // An error must not read as success, whatever a daemon sent.
  if (code == absl::StatusCode::kOk) code = absl::StatusCode::kUnknown;
  return ErrorStatus(code, error.message(),
                     error.has_detail() ? &error.detail() : nullptr);
}

bool IsUnknownHandle(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kNotFound) return false;
  std::optional<v1::ErrorDetail> detail = ErrorDetailOf(status);
  return detail.has_value() &&
         detail->reason() == v1::ErrorDetail::UNKNOWN_HANDLE;
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  // gRPC's codes are numbered as absl's (both follow google.rpc.Code).
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

std::optional<v1::ErrorDetail> ErrorDetailOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kErrorDetailPayload);
  if (!payload.has_value()) return std::nullopt;
  v1::ErrorDetail detail;
  if (!detail.ParseFromString(std::string(*payload))) return std::nullopt;
  return detail;
}

v1::Params ToParams(const std::vector<Value>& positional,
                    const std::map<std::string, Value>& named) {
  v1::Params params;
  for (const Value& value : positional) {
    *params.add_positional() = ValueToProto(value);
  }
  for (const auto& [key, value] : named) {
    (*params.mutable_named())[key] = ValueToProto(value);
  }
  return params;
}

void FillQueryRequest(std::string sql, const QueryOptions& options,
                      v1::QueryRequest& request) {
  request.set_sql(std::move(sql));
  if (!options.params.empty() || !options.named_params.empty()) {
    *request.mutable_params() = ToParams(options.params, options.named_params);
  }
  if (options.ttl.has_value()) {
    request.set_ttl_seconds(absl::ToDoubleSeconds(*options.ttl));
  }
  request.set_chunk_rows(options.chunk_rows);
}

void FillExecuteRequest(std::string sql, const std::vector<Value>& params,
                        const std::map<std::string, Value>& named_params,
                        v1::ExecuteRequest& request) {
  request.set_sql(std::move(sql));
  if (!params.empty() || !named_params.empty()) {
    *request.mutable_params() = ToParams(params, named_params);
  }
}

ExecuteResult ToExecuteResult(const v1::ExecuteResponse& response) {
  return ExecuteResult{response.rows_affected(), response.last_insert_id(),
                       response.handle()};
}

ResetResult ToResetResult(const v1::ResetResponse& response) {
  return ResetResult{response.handle(), response.backends_closed(),
                     response.cached_results_dropped()};
}

// ---------------------------------------------------------------------------
// QueryAssembler

absl::Status QueryAssembler::Schema(const v1::Schema& schema) {
  if (have_schema_) {
    return absl::InternalError("query answer sent a second schema");
  }
  have_schema_ = true;
  result_.SetSchema(schema);
  return on_batch_ != nullptr ? (*on_batch_)(result_) : absl::OkStatus();
}

absl::Status QueryAssembler::Batch(const v1::RowBatch& batch) {
  if (!have_schema_) {
    return absl::InternalError("query answer sent rows before its schema");
  }
  if (on_batch_ != nullptr) result_.ClearRows();
  absl::Status status = result_.AppendBatch(batch);
  if (!status.ok()) return status;
  rows_ += batch.row_count();
  return on_batch_ != nullptr ? (*on_batch_)(result_) : absl::OkStatus();
}

void QueryAssembler::Summary(const v1::QuerySummary& summary) {
  have_summary_ = true;
  result_.SetSummary(summary);
}

absl::Status QueryAssembler::Finish(const std::string& handle) {
  if (!have_schema_) {
    return absl::InternalError("query answer ended without a schema");
  }
  if (!have_summary_) {
    v1::QuerySummary summary;
    summary.set_row_count(rows_);
    summary.set_handle(handle);
    result_.SetSummary(summary);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// ClientCore

std::string DefaultTarget() {
  const char* env = std::getenv("CONNBROKER_TARGET");
  if (env != nullptr && *env != '\0') return env;
  const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");
  if (runtime_dir != nullptr && *runtime_dir != '\0') {
    return absl::StrCat("unix:", runtime_dir, "/connbroker.sock");
  }
  return absl::StrCat("unix:/tmp/connbroker-", getuid(), "/connbroker.sock");
}

ClientCore::ClientCore(std::string target, absl::Duration default_deadline,
                       std::string session_id,
                       std::shared_ptr<grpc::ChannelCredentials> credentials,
                       std::string bearer_token, bool use_sessions,
                       int max_idle_sessions)
    : target_(std::move(target)),
      default_deadline_(default_deadline),
      session_id_(std::move(session_id)),
      authorization_(bearer_token.empty()
                         ? std::string()
                         : absl::StrCat("Bearer ", bearer_token)),
      use_sessions_(use_sessions) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
  channel_ = grpc::CreateCustomChannel(target_, credentials, args);
  stub_ = v1::ConnectionBroker::NewStub(channel_);
  guard_ = std::make_unique<DeadlineGuard>();
  pool_ = std::make_unique<SessionPool>(
      *this,
      static_cast<size_t>(max_idle_sessions > 0 ? max_idle_sessions
                                                : kDefaultMaxIdleSessions));
}

ClientCore::~ClientCore() {
  pool_.reset();  // its streams use the guard and the stub
  guard_.reset();
}

void ClientCore::Prepare(grpc::ClientContext& context,
                         std::optional<absl::Time> deadline) const {
  if (deadline.has_value()) {
    context.set_deadline(absl::ToChronoTime(*deadline));
  }
  context.AddMetadata(kSessionKey, session_id_);
  if (!authorization_.empty()) {
    context.AddMetadata(kAuthorizationKey, authorization_);
  }
}

absl::Status ClientCore::MapError(const grpc::Status& status,
                                  const grpc::ClientContext& context) const {
  std::optional<v1::ErrorDetail> detail = TrailerDetail(context);
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
      !detail.has_value() &&
      channel_->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY) {
    return Unreachable(status.error_message());
  }
  return ErrorStatus(static_cast<absl::StatusCode>(status.error_code()),
                     status.error_message(),
                     detail.has_value() ? &*detail : nullptr);
}

absl::Status ClientCore::Unreachable(absl::string_view why) const {
  return absl::UnavailableError(absl::StrCat("connbroker daemon at ", target_,
                                             " is not reachable: ", why));
}

// ---------------------------------------------------------------------------
// ConnectionState

absl::Status ConnectionState::Reconnect(const std::string& stale_handle,
                                        absl::Time deadline) const {
  {
    absl::MutexLock lock(&mu_);
    // Another thread (or copy) already replaced it.
    if (response_.handle() != stale_handle) return absl::OkStatus();
  }
  // No lock across the call: other threads keep reading the old handle
  // and, at worst, reconnect too and get the same connection.
  absl::StatusOr<v1::ConnectResponse> response =
      core_->Connect(*request_, deadline);
  if (!response.ok()) return response.status();
  absl::MutexLock lock(&mu_);
  const bool created = response_.created();
  response_ = *std::move(response);
  // created() describes the first Connect of this handle object.
  response_.set_created(created);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Connection

std::string Connection::handle() const { return state_->handle(); }
std::string Connection::name() const { return state_->response().name(); }
std::string Connection::type() const { return state_->response().type(); }
std::string Connection::description() const {
  return state_->response().description();
}
bool Connection::created() const { return state_->response().created(); }
std::string Connection::scope() const { return state_->response().scope(); }

namespace {

// The one-shot path. Reads one Query stream into `query`.
absl::Status ReadQueryStream(const ClientCore& core,
                             const v1::QueryRequest& request,
                             absl::Time deadline, QueryAssembler& query,
                             const std::string& handle, bool* unknown_handle) {
  grpc::ClientContext context;
  core.Prepare(context, deadline);
  std::unique_ptr<grpc::ClientReader<v1::QueryResponse>> reader =
      core.stub().Query(&context, request);

  v1::QueryResponse response;
  absl::Status local;
  while (local.ok() && reader->Read(&response)) {
    switch (response.part_case()) {
      case v1::QueryResponse::kSchema:
        local = query.Schema(response.schema());
        break;
      case v1::QueryResponse::kBatch:
        local = query.Batch(response.batch());
        break;
      case v1::QueryResponse::kSummary:
        query.Summary(response.summary());
        break;
      case v1::QueryResponse::PART_NOT_SET:
        break;  // a part this client does not know: skip it
    }
  }
  if (!local.ok()) {
    // Stop the server's work, then drain so that Finish() may be called.
    context.TryCancel();
    while (reader->Read(&response)) {
    }
  }
  grpc::Status status = reader->Finish();
  if (!local.ok()) return local;
  if (!status.ok()) {
    absl::Status mapped = core.MapError(status, context);
    // The daemon checks the handle before sending anything; once rows were
    // received a retry could repeat them, so only an empty stream retries.
    *unknown_handle = !query.started() && IsUnknownHandle(mapped);
    return mapped;
  }
  return query.Finish(handle);
}

// Sends a request on a pooled stream. A statement that left a transaction
// open (see the top of this file) is rolled back before the stream goes
// back. `refused` is set when the daemon refused the stream itself (no
// Session call, or too many open): the caller goes the one-shot way.
Exchanged PooledExchange(const ClientCore& core, v1::SessionRequest& request,
                         absl::Time deadline, QueryAssembler* query,
                         bool* refused) {
  std::unique_ptr<SessionStream> stream;
  Exchanged out = ExchangeOnPool(core, request, deadline, query, &stream);
  if (out.stream_failed && !stream->kept()) {
    // A new stream the daemon refused before reading anything: it has no
    // Session call (then never again), or it is at limits.max_sessions
    // (then for this call). The one-shot calls still work either way.
    if (out.status.code() == absl::StatusCode::kUnimplemented) {
      core.MarkSessionsUnsupported();
      *refused = true;
    } else if (out.status.code() == absl::StatusCode::kResourceExhausted) {
      *refused = true;
    }
  }
  if (stream->transaction_open()) {
    v1::SessionRequest rollback;
    rollback.mutable_rollback()->set_handle(stream->transaction_handle());
    Exchange(*stream, rollback, core.Deadline(std::nullopt), nullptr);
    out.status = absl::FailedPreconditionError(
        "the statement left a transaction open, and each Connection call "
        "stands alone: it was rolled back. Use Connection::Begin(), or a "
        "Session for SQL BEGIN ... COMMIT");
  }
  core.pool().Release(std::move(stream));
  return out;
}

// Runs a request on the connection's handle over a pooled stream, with the
// handle recovery (see CallOnHandle for the arguments).
absl::Status PooledCall(const ConnectionState& state,
                        v1::SessionRequest& request, absl::Time deadline,
                        Result* result, const BatchCallback* on_batch,
                        v1::SessionResponse* last, bool* refused) {
  auto exchange = [&](v1::SessionRequest& r, QueryAssembler* query) {
    return PooledExchange(state.core(), r, deadline, query, refused);
  };
  return state.RunWithRecovery(
      deadline, [&](const std::string& handle, bool* unknown_handle) {
        return CallOnHandle(exchange, request, handle, result, on_batch, last,
                            unknown_handle);
      });
}

absl::Status RunQuery(const ConnectionState& state, std::string sql,
                      const QueryOptions& options,
                      const BatchCallback* on_batch, Result& result) {
  const ClientCore& core = state.core();
  const absl::Time deadline = core.Deadline(options.deadline);
  if (core.sessions()) {
    v1::SessionRequest request;
    FillQueryRequest(std::move(sql), options, *request.mutable_query());
    bool refused = false;
    absl::Status status = PooledCall(state, request, deadline, &result,
                                     on_batch, nullptr, &refused);
    if (!refused) return status;
    sql = std::move(*request.mutable_query()->mutable_sql());
  }
  v1::QueryRequest request;
  FillQueryRequest(std::move(sql), options, request);
  return state.RunWithRecovery(
      deadline, [&](const std::string& handle, bool* unknown_handle) {
        request.mutable_target()->set_handle(handle);
        QueryAssembler query(result, on_batch);
        return ReadQueryStream(core, request, deadline, query, handle,
                               unknown_handle);
      });
}

// One unary call of `method` on the connection's handle, with the recovery.
template <typename Request, typename Response>
absl::StatusOr<Response> UnaryWithRecovery(
    const ConnectionState& state,
    grpc::Status (v1::ConnectionBroker::Stub::*method)(grpc::ClientContext*,
                                                       const Request&,
                                                       Response*),
    Request request, absl::Time deadline) {
  Response response;
  absl::Status status = state.RunWithRecovery(
      deadline, [&](const std::string& handle, bool* unknown_handle) {
        request.mutable_target()->set_handle(handle);
        absl::StatusOr<Response> answer =
            state.core().Call(method, request, deadline);
        *unknown_handle = IsUnknownHandle(answer.status());
        if (answer.ok()) response = *std::move(answer);
        return answer.status();
      });
  if (!status.ok()) return status;
  return response;
}

}  // namespace

absl::StatusOr<Result> Connection::Query(std::string sql,
                                         const QueryOptions& options) const {
  Result result;
  absl::Status status =
      RunQuery(*state_, std::move(sql), options, nullptr, result);
  if (!status.ok()) return status;
  return result;
}

absl::StatusOr<QuerySummary> Connection::QueryBatches(
    std::string sql, const QueryOptions& options,
    const BatchCallback& on_batch) const {
  Result result;
  absl::Status status =
      RunQuery(*state_, std::move(sql), options, &on_batch, result);
  if (!status.ok()) return status;
  return result.summary();
}

absl::StatusOr<ExecuteResult> Connection::Execute(
    std::string sql, const std::vector<Value>& params,
    const std::map<std::string, Value>& named_params) const {
  const ClientCore& core = state_->core();
  const absl::Time deadline = core.Deadline(std::nullopt);
  if (core.sessions()) {
    v1::SessionRequest request;
    FillExecuteRequest(std::move(sql), params, named_params,
                       *request.mutable_execute());
    v1::SessionResponse last;
    bool refused = false;
    absl::Status status = PooledCall(*state_, request, deadline, nullptr,
                                     nullptr, &last, &refused);
    if (!refused) {
      if (!status.ok()) return status;
      return ToExecuteResult(last.executed());
    }
    sql = std::move(*request.mutable_execute()->mutable_sql());
  }
  v1::ExecuteRequest request;
  FillExecuteRequest(std::move(sql), params, named_params, request);
  absl::StatusOr<v1::ExecuteResponse> response =
      UnaryWithRecovery(*state_, &v1::ConnectionBroker::Stub::Execute,
                        std::move(request), deadline);
  if (!response.ok()) return response.status();
  return ToExecuteResult(*response);
}

absl::Status Connection::Reset(ResetResult* counts) const {
  const ClientCore& core = state_->core();
  const absl::Time deadline = core.Deadline(std::nullopt);
  v1::ResetResponse answer;
  bool refused = !core.sessions();
  if (!refused) {
    v1::SessionRequest request;
    request.mutable_reset();
    v1::SessionResponse last;
    absl::Status status = PooledCall(*state_, request, deadline, nullptr,
                                     nullptr, &last, &refused);
    if (!refused) {
      if (!status.ok()) return status;
      answer = std::move(*last.mutable_reset());
    }
  }
  if (refused) {
    absl::StatusOr<v1::ResetResponse> response =
        UnaryWithRecovery(*state_, &v1::ConnectionBroker::Stub::Reset,
                          v1::ResetRequest(), deadline);
    if (!response.ok()) return response.status();
    answer = *std::move(response);
  }
  if (counts != nullptr) *counts = ToResetResult(answer);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Client

Client::Client(std::shared_ptr<ClientCore> core) : core_(std::move(core)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  if (options.default_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("default_deadline must be positive");
  }
  if (options.max_idle_sessions < 0) {
    return absl::InvalidArgumentError("max_idle_sessions must not be negative");
  }
  std::string target =
      options.target.empty() ? DefaultTarget() : std::move(options.target);
  std::string session = options.session_id.empty()
                            ? RandomSessionId()
                            : std::move(options.session_id);
  if (options.client_cert_pem.empty() != options.client_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "client_cert_pem and client_key_pem go together: set both or "
        "neither");
  }
  if (options.bearer_token.find_first_of("\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        "bearer_token must be one line (no line breaks)");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (options.tls || !options.root_certs_pem.empty() ||
      !options.client_cert_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.root_certs_pem;
    ssl.pem_cert_chain = options.client_cert_pem;
    ssl.pem_private_key = options.client_key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  auto core = std::make_shared<ClientCore>(
      std::move(target), options.default_deadline, std::move(session),
      std::move(credentials), std::move(options.bearer_token),
      options.use_sessions, options.max_idle_sessions);
  return std::unique_ptr<Client>(new Client(std::move(core)));
}

const std::string& Client::target() const { return core_->target(); }
const std::string& Client::session_id() const { return core_->session_id(); }

absl::StatusOr<Connection> Client::Connect(
    const ConnectOptions& options) const {
  v1::ConnectRequest request = ToConnectRequest(options);
  absl::StatusOr<v1::ConnectResponse> response =
      core_->Connect(request, core_->Deadline(std::nullopt));
  if (!response.ok()) return response.status();
  return Connection(
      std::make_shared<ConnectionState>(core_, std::move(request), *response));
}

Connection Client::Attach(const std::string& handle) const {
  v1::ConnectResponse response;
  response.set_handle(handle);
  return Connection(
      std::make_shared<ConnectionState>(core_, std::nullopt, response));
}

absl::StatusOr<v1::ListConnectionsResponse> Client::ListConnections(
    bool all_sessions) const {
  v1::ListConnectionsRequest request;
  request.set_all_sessions(all_sessions);
  return core_->Call(&v1::ConnectionBroker::Stub::ListConnections, request,
                     core_->Deadline(std::nullopt));
}

absl::StatusOr<v1::GetStatsResponse> Client::Stats() const {
  return core_->Call(&v1::ConnectionBroker::Stub::GetStats,
                     v1::GetStatsRequest(), core_->Deadline(std::nullopt));
}

absl::StatusOr<ResetResult> Client::ResetHandle(
    const std::string& handle) const {
  v1::ResetRequest request;
  request.mutable_target()->set_handle(handle);
  absl::StatusOr<v1::ResetResponse> response =
      core_->Call(&v1::ConnectionBroker::Stub::Reset, request,
                  core_->Deadline(std::nullopt));
  if (!response.ok()) return response.status();
  return ToResetResult(*response);
}

absl::Status Client::WaitForReady(absl::Duration timeout) const {
  if (core_->channel().WaitForConnected(
          absl::ToChronoTime(absl::Now() + timeout))) {
    return absl::OkStatus();
  }
  return core_->Unreachable(
      absl::StrCat("not connected after ", absl::FormatDuration(timeout)));
}

}  // namespace connbroker
