// BrokerService: gRPC callback reactors that hand work to the WorkerPool.
#include "server/broker_service.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/logging.h"
#include "server/session_reactor.h"
#include "server/status_mapping.h"
#include "server/wire.h"

namespace connbroker::server {
namespace {

constexpr char kSessionMetadata[] = "connbroker-session";
// Session ids are keys of the daemon's tables: bounded like names.
constexpr size_t kMaxSessionBytes = 256;

}  // namespace

std::string SessionOf(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kSessionMetadata);
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

absl::StatusOr<Caller> BrokerService::CallerOf(
    const grpc::CallbackServerContext& context) {
  std::string session = SessionOf(context);
  if (session.size() > kMaxSessionBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the connbroker-session id is ", session.size(),
                     " bytes long; at most ", kMaxSessionBytes));
  }
  if (authenticate_) return authenticate_(context, std::move(session));
  Caller caller;
  caller.session = std::move(session);
  return caller;
}

template <typename Request>
absl::StatusOr<Caller> BrokerService::Admit(
    const grpc::CallbackServerContext& context, const grpc::ByteBuffer& raw,
    Request* request) {
  if (absl::Status decoded = DecodeRequest(raw, request); !decoded.ok()) {
    return decoded;
  }
  return CallerOf(context);
}

template <typename Request, typename Response, typename Work>
grpc::ServerUnaryReactor* BrokerService::RunUnary(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw,
    grpc::ByteBuffer* response, const char* method, Work work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto finish = [this, context, reactor, method](const absl::Status& status) {
    if (!status.ok()) {
      broker_->CountError();
      spdlog::debug("{} failed: {}", method, status.ToString());
    }
    reactor->Finish(ToGrpcStatus(status, context));
  };
  // Decoding and authenticating are cheap and bounded (gRPC caps the
  // message size), so they run here and a bad call never takes a worker.
  auto request = std::make_shared<Request>();
  absl::StatusOr<Caller> caller = Admit(*context, *raw, request.get());
  if (!caller.ok()) {
    finish(caller.status());
    return reactor;
  }
  workers_->Submit([request, caller = *std::move(caller), response,
                    finish = std::move(finish), work = std::move(work)] {
    absl::StatusOr<Response> result = work(*request, caller);
    absl::Status status = result.status();
    if (status.ok()) status = Encode(*result, response);
    finish(status);
  });
  return reactor;
}

grpc::ServerUnaryReactor* BrokerService::Connect(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return RunUnary<v1::ConnectRequest, v1::ConnectResponse>(
      context, request, response, "Connect",
      [this](const v1::ConnectRequest& request, const Caller& caller) {
        return broker_->Connect(request, caller);
      });
}

grpc::ServerUnaryReactor* BrokerService::Reset(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return RunUnary<v1::ResetRequest, v1::ResetResponse>(
      context, request, response, "Reset",
      [this](const v1::ResetRequest& request, const Caller& caller) {
        return broker_->Reset(request, caller);
      });
}

grpc::ServerUnaryReactor* BrokerService::ListConnections(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return RunUnary<v1::ListConnectionsRequest, v1::ListConnectionsResponse>(
      context, request, response, "ListConnections",
      [this](const v1::ListConnectionsRequest& request, const Caller& caller) {
        return broker_->ListConnections(request, caller);
      });
}

grpc::ServerUnaryReactor* BrokerService::GetStats(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return RunUnary<v1::GetStatsRequest, v1::GetStatsResponse>(
      context, request, response, "GetStats",
      [this](const v1::GetStatsRequest& /*request*/, const Caller& caller) {
        return broker_->Stats(caller);
      });
}

// One Execute call: a unary reactor of its own (not DefaultReactor) so that
// a cancel or deadline reaches the statement or its wait for the writer.
class BrokerService::ExecuteReactor final : public grpc::ServerUnaryReactor {
 public:
  ExecuteReactor(BrokerService* service, grpc::CallbackServerContext* context,
                 const grpc::ByteBuffer* raw, grpc::ByteBuffer* response)
      : service_(service), context_(context), response_(response) {
    absl::StatusOr<Caller> caller = service_->Admit(*context_, *raw, &request_);
    if (!caller.ok()) {
      FinishWith(caller.status());
      return;
    }
    caller_ = *std::move(caller);
    service_->workers_->Submit([this] {
      service_->broker_->Execute(
          request_, caller_, &cancel_,
          [this](absl::StatusOr<v1::ExecuteResponse> result) {
            absl::Status status = result.status();
            if (status.ok()) status = Encode(*result, response_);
            FinishWith(status);
          });
    });
  }

  void OnCancel() override { cancel_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  void FinishWith(const absl::Status& status) {
    if (!status.ok()) {
      service_->broker_->CountError();
      spdlog::debug("Execute failed: {}", status.ToString());
    }
    Finish(ToGrpcStatus(status, context_));
  }

  BrokerService* const service_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer* const response_;
  v1::ExecuteRequest request_;
  Caller caller_;
  CancelSignal cancel_;
};

grpc::ServerUnaryReactor* BrokerService::Execute(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return new ExecuteReactor(this, context, request, response);
}

// One Query call. Life cycle: constructed on a reactor thread, which queues
// Start on a worker; each completed write queues Produce on a worker; the
// call ends with exactly one Finish, after which gRPC calls OnDone and the
// reactor deletes itself. Only one of Start/Produce runs at a time, because
// the next is queued only after the previous one's write completed.
class BrokerService::QueryReactor final
    : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  QueryReactor(BrokerService* service, grpc::CallbackServerContext* context,
               const grpc::ByteBuffer* raw)
      : service_(service), context_(context) {
    absl::StatusOr<Caller> caller = service_->Admit(*context_, *raw, &request_);
    if (!caller.ok()) {
      FinishWith(caller.status());
      return;
    }
    caller_ = *std::move(caller);
    service_->workers_->Submit([this] { Start(); });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      // The client went away or the call was cancelled: stop reading.
      FinishWith(absl::CancelledError("the client stopped reading"));
      return;
    }
    // A message the run already holds (schema, buffered or cached batches,
    // the summary) is produced right here; only database reads go to a
    // worker. A thread hop costs more than a small query.
    if (producer_->NextNeedsDatabase()) {
      service_->workers_->Submit([this] { Produce(); });
    } else {
      Produce();
    }
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (run_ != nullptr) run_->Cancel();
  }

  // Destroying the run may finish a statement on the server (a cursor left
  // mid-result is cancelled and drained): not on a reactor thread.
  void OnDone() override {
    service_->workers_->Submit([this] { delete this; });
  }

 private:
  void Start() {
    // A run following another caller's identical query parks (kWaiting)
    // instead of holding this worker; the cache's callback resumes it here.
    absl::StatusOr<std::unique_ptr<QueryRun>> run =
        service_->broker_->StartQuery(request_, caller_, [this] {
          service_->workers_->Submit([this] { Produce(); });
        });
    if (!run.ok()) {
      FinishWith(run.status());
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      run_ = *std::move(run);
      producer_ = run_.get();
      if (cancelled_) run_->Cancel();
    }
    Produce();
  }

  void Produce() {
    QueryRun::Outgoing out;
    absl::StatusOr<QueryRun::Progress> progress = producer_->Next(&out);
    if (!progress.ok()) {
      FinishWith(progress.status());
      return;
    }
    if (*progress == QueryRun::Progress::kWaiting) {
      return;  // the run calls resume, which queues Produce again
    }
    if (*progress == QueryRun::Progress::kDone) {
      FinishWith(absl::OkStatus());
      return;
    }
    absl::Status encoded = absl::OkStatus();
    if (out.wire != nullptr) {
      grpc::Slice slice = SharedSlice(std::move(out.wire));
      grpc::ByteBuffer buffer(&slice, 1);
      wire_.Swap(&buffer);
    } else {
      encoded = Encode(*out.message, &wire_);
    }
    if (!encoded.ok()) {
      FinishWith(encoded);
    } else if (out.last) {
      // The last message: send it with the status in one go.
      StartWriteAndFinish(&wire_, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      // No buffer_hint here: a hinted write may not complete until a later
      // write flushes it, and the next write waits for this one to complete.
      StartWrite(&wire_);
    }
  }

  void FinishWith(const absl::Status& status) {
    if (!status.ok()) {
      service_->broker_->CountError();
      spdlog::debug("Query failed: {}", status.ToString());
    }
    Finish(ToGrpcStatus(status, context_));
  }

  BrokerService* const service_;
  grpc::CallbackServerContext* const context_;
  v1::QueryRequest request_;
  Caller caller_;
  grpc::ByteBuffer wire_;  // the message being written, encoded
  // run_, for the worker tasks: set once by Start, then used only by the
  // Produce calls that follow it one at a time.
  QueryRun* producer_ = nullptr;

  absl::Mutex mu_;  // between OnCancel (reactor thread) and Start (worker)
  std::unique_ptr<QueryRun> run_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
BrokerService::Session(grpc::CallbackServerContext* context) {
  return new SessionReactor(broker_, workers_, &sessions_, context,
                            CallerOf(*context));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* BrokerService::Query(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return new QueryReactor(this, context, request);
}

}  // namespace connbroker::server
