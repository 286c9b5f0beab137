// Internal to the C++ client: ClientCore, what every Connection, Transaction
// and Session of one Client share (the channel, the options, the kept
// Session streams); ConnectionState, what the copies of one Connection share;
// and the helpers both call paths (Session streams and one-shot RPCs) use to
// build requests, decode query answers and turn the daemon's errors into
// absl::Status. Not installed: the public API is connbroker/client.h.
#ifndef CONNBROKER_CLIENT_SRC_CLIENT_CORE_H_
#define CONNBROKER_CLIENT_SRC_CLIENT_CORE_H_

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "connbroker/v1/service.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/credentials.h"

namespace connbroker {

class DeadlineGuard;
class SessionPool;

// The one place the daemon's errors become absl::Status, whichever way they
// came (a call's status and "connbroker-error-bin" trailer, or a Session
// answer's SessionError): the detail rides along as a payload that
// ErrorDetailOf reads.
absl::Status ErrorStatus(absl::StatusCode code, absl::string_view message,
                         const v1::ErrorDetail* detail);
absl::Status FromSessionError(const v1::SessionError& error);

// True for the daemon's "I do not know this handle" (it restarted, or the
// handle came from another daemon): Connecting again gets a new one.
bool IsUnknownHandle(const absl::Status& status);

v1::Params ToParams(const std::vector<Value>& positional,
                    const std::map<std::string, Value>& named);
// Fills `request` (reused by the caller, so its strings keep their buffers)
// from a statement and its options; the target is the caller's.
void FillQueryRequest(std::string sql, const QueryOptions& options,
                      v1::QueryRequest& request);
void FillExecuteRequest(std::string sql, const std::vector<Value>& params,
                        const std::map<std::string, Value>& named_params,
                        v1::ExecuteRequest& request);
ExecuteResult ToExecuteResult(const v1::ExecuteResponse& response);
ResetResult ToResetResult(const v1::ResetResponse& response);

// Decodes one query answer, schema then batches then summary, into a
// Result: all of it, or with `on_batch` one batch at a time handed to the
// callback. Used by both call paths, which differ only in how the parts
// arrive.
class QueryAssembler {
 public:
  QueryAssembler(Result& result, const BatchCallback* on_batch)
      : result_(result), on_batch_(on_batch) {}

  // A non-OK return stops the query: a malformed answer, or the callback's
  // own error.
  absl::Status Schema(const v1::Schema& schema);
  absl::Status Batch(const v1::RowBatch& batch);
  void Summary(const v1::QuerySummary& summary);
  // After the last part: fails if no schema came; makes up the summary of
  // an answer that had none.
  absl::Status Finish(const std::string& handle);

  // True once the schema arrived: the daemon ran the statement, so a retry
  // could repeat what the caller was already handed.
  bool started() const { return have_schema_; }

 private:
  Result& result_;
  const BatchCallback* const on_batch_;
  bool have_schema_ = false;
  bool have_summary_ = false;
  int64_t rows_ = 0;
};

// Shared by every Connection, Transaction and Session of one Client, and
// kept alive by them after the Client is gone. The options are immutable;
// the pool and the guard lock for themselves, so every method is
// thread-safe.
class ClientCore {
 public:
  ClientCore(std::string target, absl::Duration default_deadline,
             std::string session_id,
             std::shared_ptr<grpc::ChannelCredentials> credentials,
             std::string bearer_token, bool use_sessions,
             int max_idle_sessions);
  ~ClientCore();

  const std::string& target() const { return target_; }
  const std::string& session_id() const { return session_id_; }
  grpc::Channel& channel() const { return *channel_; }
  v1::ConnectionBroker::Stub& stub() const { return *stub_; }
  absl::Duration default_deadline() const { return default_deadline_; }

  // Whether Connection calls go over kept Session streams: asked for, and
  // the daemon has not answered a Session call with UNIMPLEMENTED (one that
  // predates it), after which this client uses the one-shot calls.
  bool sessions() const {
    return use_sessions_ &&
           !sessions_unsupported_.load(std::memory_order_relaxed);
  }
  void MarkSessionsUnsupported() const {
    sessions_unsupported_.store(true, std::memory_order_relaxed);
  }
  SessionPool& pool() const { return *pool_; }
  DeadlineGuard& guard() const { return *guard_; }

  absl::Time Deadline(std::optional<absl::Duration> timeout) const {
    return absl::Now() + timeout.value_or(default_deadline_);
  }

  // Sets a call's deadline (none for a kept stream) and metadata.
  void Prepare(grpc::ClientContext& context,
               std::optional<absl::Time> deadline) const;

  // The one place gRPC failures become the library's errors. A transport
  // failure (no daemon listening) gets a message naming the target; an
  // UNAVAILABLE the daemon itself sent (a database down) keeps its own.
  absl::Status MapError(const grpc::Status& status,
                        const grpc::ClientContext& context) const;
  absl::Status Unreachable(absl::string_view why) const;

  // Makes one unary call of `method`.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(
      grpc::Status (v1::ConnectionBroker::Stub::*method)(grpc::ClientContext*,
                                                         const Request&,
                                                         Response*),
      const Request& request, absl::Time deadline) const {
    grpc::ClientContext context;
    Prepare(context, deadline);
    Response response;
    grpc::Status status = (stub_.get()->*method)(&context, request, &response);
    if (status.ok()) return response;
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
  const bool use_sessions_;
  mutable std::atomic<bool> sessions_unsupported_{false};
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ConnectionBroker::Stub> stub_;
  // Declared before the pool: closing the pool's streams may use it.
  std::unique_ptr<DeadlineGuard> guard_;
  std::unique_ptr<SessionPool> pool_;
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
  const std::shared_ptr<const ClientCore>& shared_core() const { return core_; }

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

 private:
  absl::Status Reconnect(const std::string& stale_handle,
                         absl::Time deadline) const;

  const std::shared_ptr<const ClientCore> core_;
  const std::optional<v1::ConnectRequest> request_;
  mutable absl::Mutex mu_;
  mutable v1::ConnectResponse response_ ABSL_GUARDED_BY(mu_);
};

}  // namespace connbroker

#endif  // CONNBROKER_CLIENT_SRC_CLIENT_CORE_H_
