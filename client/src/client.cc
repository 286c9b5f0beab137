// The C++ client's gRPC side: the shared channel, per-call deadlines and
// session metadata, the mapping of gRPC statuses to absl::Status, and the
// recovery of handles a restarted daemon no longer knows.
#include "connbroker/client.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "connbroker/v1/service.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace connbroker {

namespace {

constexpr char kSessionKey[] = "connbroker-session";
constexpr char kAuthorizationKey[] = "authorization";
constexpr char kErrorDetailKey[] = "connbroker-error-bin";
// Matches the daemon's batch limit (about 1 MiB a batch) with room to spare;
// gRPC's default of 4 MiB would refuse a large single-row batch.
constexpr int kMaxReceiveMessageBytes = 16 * 1024 * 1024;

std::string RandomSessionId() {
  absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen),
                         absl::Uniform<uint64_t>(gen));
}

// Where ErrorDetailOf(absl::Status) finds the daemon's detail.
constexpr char kErrorDetailPayload[] = "connbroker.v1/ErrorDetail";

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

// True when the daemon said it does not know the handle (it restarted, or
// the handle came from another daemon): Connecting again gets a new one.
bool IsUnknownHandle(const grpc::Status& status,
                     const grpc::ClientContext& context) {
  if (status.error_code() != grpc::StatusCode::NOT_FOUND) return false;
  std::optional<v1::ErrorDetail> detail = TrailerDetail(context);
  return detail.has_value() &&
         detail->reason() == v1::ErrorDetail::UNKNOWN_HANDLE;
}

ResetResult ToResetResult(const v1::ResetResponse& response) {
  return ResetResult{response.handle(), response.backends_closed(),
                     response.cached_results_dropped()};
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

}  // namespace

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

std::string DefaultTarget() {
  const char* env = std::getenv("CONNBROKER_TARGET");
  if (env != nullptr && *env != '\0') return env;
  const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");
  if (runtime_dir != nullptr && *runtime_dir != '\0') {
    return absl::StrCat("unix:", runtime_dir, "/connbroker.sock");
  }
  return absl::StrCat("unix:/tmp/connbroker-", getuid(), "/connbroker.sock");
}

// What every Client and Connection of one Client share: the channel, the
// stub and the options. Immutable after construction, so thread-safe.
class ClientCore {
 public:
  ClientCore(std::string target, absl::Duration default_deadline,
             std::string session_id,
             std::shared_ptr<grpc::ChannelCredentials> credentials,
             std::string bearer_token)
      : target_(std::move(target)),
        default_deadline_(default_deadline),
        session_id_(std::move(session_id)),
        authorization_(bearer_token.empty()
                           ? std::string()
                           : absl::StrCat("Bearer ", bearer_token)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxReceiveMessageBytes);
    channel_ = grpc::CreateCustomChannel(target_, credentials, args);
    stub_ = v1::ConnectionBroker::NewStub(channel_);
  }

  const std::string& target() const { return target_; }
  const std::string& session_id() const { return session_id_; }
  grpc::Channel& channel() const { return *channel_; }
  v1::ConnectionBroker::Stub& stub() const { return *stub_; }

  absl::Time Deadline(std::optional<absl::Duration> timeout) const {
    return absl::Now() + timeout.value_or(default_deadline_);
  }

  void Prepare(grpc::ClientContext& context, absl::Time deadline) const {
    context.set_deadline(absl::ToChronoTime(deadline));
    context.AddMetadata(kSessionKey, session_id_);
    if (!authorization_.empty()) {
      context.AddMetadata(kAuthorizationKey, authorization_);
    }
  }

  // The one place gRPC failures become the library's errors. A transport
  // failure (no daemon listening) gets a message naming the target; an
  // UNAVAILABLE the daemon itself sent (a database down) keeps its own.
  absl::Status MapError(const grpc::Status& status,
                        const grpc::ClientContext& context) const {
    std::optional<v1::ErrorDetail> detail = TrailerDetail(context);
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
        !detail.has_value() &&
        channel_->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY) {
      return Unreachable(status.error_message());
    }
    absl::Status mapped = FromGrpcStatus(status);
    if (detail.has_value()) {
      mapped.SetPayload(kErrorDetailPayload,
                        absl::Cord(detail->SerializeAsString()));
    }
    return mapped;
  }

  absl::Status Unreachable(absl::string_view why) const {
    return absl::UnavailableError(absl::StrCat("connbroker daemon at ", target_,
                                               " is not reachable: ", why));
  }

  // Makes one unary call of `method`. When `unknown_handle` is given, it is
  // set to whether the daemon answered that it does not know the handle.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(
      grpc::Status (v1::ConnectionBroker::Stub::*method)(grpc::ClientContext*,
                                                         const Request&,
                                                         Response*),
      const Request& request, absl::Time deadline,
      bool* unknown_handle = nullptr) const {
    grpc::ClientContext context;
    Prepare(context, deadline);
    Response response;
    grpc::Status status = (stub_.get()->*method)(&context, request, &response);
    if (status.ok()) return response;
    if (unknown_handle != nullptr) {
      *unknown_handle = IsUnknownHandle(status, context);
    }
    return MapError(status, context);
  }

  absl::StatusOr<v1::ConnectResponse> Connect(const v1::ConnectRequest& request,
                                              absl::Time deadline) const {
    return Call(&v1::ConnectionBroker::Stub::Connect, request, deadline);
  }

 private:
  const std::string target_;
  const absl::Duration default_deadline_;
  const std::string session_id_;
  const std::string authorization_;  // "Bearer <token>", or empty
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ConnectionBroker::Stub> stub_;
};

// The state every copy of one Connection shares: the request it was made
// with and what the daemon answered. The handle changes when the daemon
// forgets it, hence the mutex.
class ConnectionState {
 public:
  // `request` is empty for a Connection attached to a bare handle.
  ConnectionState(std::shared_ptr<const ClientCore> core,
                  std::optional<v1::ConnectRequest> request,
                  const v1::ConnectResponse& response)
      : core_(std::move(core)),
        request_(std::move(request)),
        response_(response) {}

  const ClientCore& core() const { return *core_; }

  v1::ConnectResponse response() const {
    absl::MutexLock lock(&mu_);
    return response_;
  }
  std::string handle() const {
    absl::MutexLock lock(&mu_);
    return response_.handle();
  }

  // Runs `attempt(handle, &unknown_handle)` with the current handle. When the
  // attempt reports that the daemon did not know the handle, Connects again
  // with the remembered request and runs the attempt once more.
  template <typename Attempt>
  absl::Status RunWithRecovery(absl::Time deadline, Attempt attempt) const {
    const std::string used = handle();
    bool unknown_handle = false;
    absl::Status status = attempt(used, &unknown_handle);
    if (!unknown_handle || !request_.has_value()) return status;
    absl::Status reconnected = Reconnect(used, deadline);
    if (!reconnected.ok()) return reconnected;
    return attempt(handle(), &unknown_handle);
  }

  // One unary call of `method` on this connection's handle, with the
  // recovery above. `request`'s target is set here.
  template <typename Request, typename Response>
  absl::StatusOr<Response> CallWithRecovery(
      grpc::Status (v1::ConnectionBroker::Stub::*method)(grpc::ClientContext*,
                                                         const Request&,
                                                         Response*),
      Request request, absl::Time deadline) const {
    Response response;
    absl::Status status = RunWithRecovery(
        deadline, [&](const std::string& handle, bool* unknown_handle) {
          request.mutable_target()->set_handle(handle);
          absl::StatusOr<Response> answer =
              core_->Call(method, request, deadline, unknown_handle);
          if (answer.ok()) response = *std::move(answer);
          return answer.status();
        });
    if (!status.ok()) return status;
    return response;
  }

 private:
  absl::Status Reconnect(const std::string& stale_handle,
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

  const std::shared_ptr<const ClientCore> core_;
  const std::optional<v1::ConnectRequest> request_;
  mutable absl::Mutex mu_;
  mutable v1::ConnectResponse response_ ABSL_GUARDED_BY(mu_);
};

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

// Reads one Query stream into `result`. With `on_batch`, `result` holds one
// batch at a time and is handed to the callback; without, it collects all.
absl::Status ReadQueryStream(const ClientCore& core, v1::QueryRequest& request,
                             absl::Time deadline, const BatchCallback* on_batch,
                             const std::string& handle, Result& result,
                             bool* unknown_handle) {
  request.mutable_target()->set_handle(handle);
  grpc::ClientContext context;
  core.Prepare(context, deadline);
  std::unique_ptr<grpc::ClientReader<v1::QueryResponse>> reader =
      core.stub().Query(&context, request);

  v1::QueryResponse response;
  bool received = false;
  bool have_schema = false;
  bool have_summary = false;
  int64_t rows = 0;
  absl::Status local;
  while (local.ok() && reader->Read(&response)) {
    received = true;
    switch (response.part_case()) {
      case v1::QueryResponse::kSchema:
        if (have_schema) {
          local = absl::InternalError("query stream sent a second schema");
          break;
        }
        have_schema = true;
        result.SetSchema(response.schema());
        if (on_batch != nullptr) local = (*on_batch)(result);
        break;
      case v1::QueryResponse::kBatch:
        if (!have_schema) {
          local = absl::InternalError("query stream sent rows before schema");
          break;
        }
        if (on_batch != nullptr) result.ClearRows();
        local = result.AppendBatch(response.batch());
        rows += response.batch().row_count();
        if (local.ok() && on_batch != nullptr) local = (*on_batch)(result);
        break;
      case v1::QueryResponse::kSummary:
        have_summary = true;
        result.SetSummary(response.summary());
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
    // The daemon checks the handle before sending anything; once rows were
    // received a retry could repeat them, so only an empty stream retries.
    *unknown_handle = !received && IsUnknownHandle(status, context);
    return core.MapError(status, context);
  }
  if (!have_schema) {
    return absl::InternalError("query stream ended without a schema");
  }
  if (!have_summary) {
    v1::QuerySummary summary;
    summary.set_row_count(rows);
    summary.set_handle(handle);
    result.SetSummary(summary);
  }
  return absl::OkStatus();
}

v1::QueryRequest ToQueryRequest(std::string sql, const QueryOptions& options) {
  v1::QueryRequest request;
  request.set_sql(std::move(sql));
  *request.mutable_params() = ToParams(options.params, options.named_params);
  if (options.ttl.has_value()) {
    request.set_ttl_seconds(absl::ToDoubleSeconds(*options.ttl));
  }
  request.set_chunk_rows(options.chunk_rows);
  return request;
}

}  // namespace

absl::StatusOr<Result> Connection::Query(std::string sql,
                                         const QueryOptions& options) const {
  const ClientCore& core = state_->core();
  const absl::Time deadline = core.Deadline(options.deadline);
  v1::QueryRequest request = ToQueryRequest(std::move(sql), options);
  Result result;
  absl::Status status = state_->RunWithRecovery(
      deadline, [&](const std::string& handle, bool* unknown_handle) {
        return ReadQueryStream(core, request, deadline, nullptr, handle, result,
                               unknown_handle);
      });
  if (!status.ok()) return status;
  return result;
}

absl::StatusOr<QuerySummary> Connection::QueryBatches(
    std::string sql, const QueryOptions& options,
    const BatchCallback& on_batch) const {
  const ClientCore& core = state_->core();
  const absl::Time deadline = core.Deadline(options.deadline);
  v1::QueryRequest request = ToQueryRequest(std::move(sql), options);
  Result result;
  absl::Status status = state_->RunWithRecovery(
      deadline, [&](const std::string& handle, bool* unknown_handle) {
        return ReadQueryStream(core, request, deadline, &on_batch, handle,
                               result, unknown_handle);
      });
  if (!status.ok()) return status;
  return result.summary();
}

absl::StatusOr<ExecuteResult> Connection::Execute(
    std::string sql, const std::vector<Value>& params,
    const std::map<std::string, Value>& named_params) const {
  v1::ExecuteRequest request;
  request.set_sql(std::move(sql));
  *request.mutable_params() = ToParams(params, named_params);
  absl::StatusOr<v1::ExecuteResponse> response = state_->CallWithRecovery(
      &v1::ConnectionBroker::Stub::Execute, std::move(request),
      state_->core().Deadline(std::nullopt));
  if (!response.ok()) return response.status();
  return ExecuteResult{response->rows_affected(), response->last_insert_id(),
                       response->handle()};
}

absl::Status Connection::Reset(ResetResult* counts) const {
  absl::StatusOr<v1::ResetResponse> response = state_->CallWithRecovery(
      &v1::ConnectionBroker::Stub::Reset, v1::ResetRequest(),
      state_->core().Deadline(std::nullopt));
  if (!response.ok()) return response.status();
  if (counts != nullptr) *counts = ToResetResult(*response);
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
      std::move(credentials), std::move(options.bearer_token));
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
