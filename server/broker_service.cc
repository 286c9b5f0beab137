// BrokerService: gRPC callback reactors that hand work to the WorkerPool.
#include "server/broker_service.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/logging.h"
#include "server/status_mapping.h"

namespace connbroker::server {
namespace {

constexpr char kSessionMetadata[] = "connbroker-session";

}  // namespace

std::string SessionOf(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kSessionMetadata);
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

template <typename Work>
grpc::ServerUnaryReactor* BrokerService::RunUnary(
    grpc::CallbackServerContext* context, const char* method, Work work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  workers_->Submit([this, context, reactor, method, work = std::move(work)] {
    absl::Status status = work();
    if (!status.ok()) {
      broker_->CountError();
      spdlog::debug("{} failed: {}", method, status.ToString());
    }
    reactor->Finish(ToGrpcStatus(status, context));
  });
  return reactor;
}

grpc::ServerUnaryReactor* BrokerService::Connect(
    grpc::CallbackServerContext* context, const v1::ConnectRequest* request,
    v1::ConnectResponse* response) {
  return RunUnary(context, "Connect", [=, this]() -> absl::Status {
    absl::StatusOr<v1::ConnectResponse> result =
        broker_->Connect(*request, SessionOf(*context));
    if (!result.ok()) return result.status();
    *response = *std::move(result);
    return absl::OkStatus();
  });
}

// One Execute call: a unary reactor of its own (not DefaultReactor) so that
// a cancel or deadline reaches the statement or its wait for the writer.
class BrokerService::ExecuteReactor final : public grpc::ServerUnaryReactor {
 public:
  ExecuteReactor(BrokerService* service, grpc::CallbackServerContext* context,
                 const v1::ExecuteRequest* request,
                 v1::ExecuteResponse* response)
      : service_(service),
        context_(context),
        request_(request),
        response_(response) {
    service_->workers_->Submit([this] {
      service_->broker_->Execute(
          *request_, SessionOf(*context_), &cancel_,
          [this](absl::StatusOr<v1::ExecuteResponse> result) {
            absl::Status status = result.status();
            if (result.ok()) *response_ = *std::move(result);
            if (!status.ok()) {
              service_->broker_->CountError();
              spdlog::debug("Execute failed: {}", status.ToString());
            }
            Finish(ToGrpcStatus(status, context_));
          });
    });
  }

  void OnCancel() override { cancel_.Cancel(); }
  void OnDone() override { delete this; }

 private:
  BrokerService* const service_;
  grpc::CallbackServerContext* const context_;
  const v1::ExecuteRequest* const request_;
  v1::ExecuteResponse* const response_;
  CancelSignal cancel_;
};

grpc::ServerUnaryReactor* BrokerService::Execute(
    grpc::CallbackServerContext* context, const v1::ExecuteRequest* request,
    v1::ExecuteResponse* response) {
  return new ExecuteReactor(this, context, request, response);
}

grpc::ServerUnaryReactor* BrokerService::Reset(
    grpc::CallbackServerContext* context, const v1::ResetRequest* request,
    v1::ResetResponse* response) {
  return RunUnary(context, "Reset", [=, this]() -> absl::Status {
    absl::StatusOr<v1::ResetResponse> result =
        broker_->Reset(*request, SessionOf(*context));
    if (!result.ok()) return result.status();
    *response = *std::move(result);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::ListConnections(
    grpc::CallbackServerContext* context,
    const v1::ListConnectionsRequest* /*request*/,
    v1::ListConnectionsResponse* response) {
  return RunUnary(context, "ListConnections", [=, this]() -> absl::Status {
    *response = broker_->ListConnections();
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BrokerService::GetStats(
    grpc::CallbackServerContext* context,
    const v1::GetStatsRequest* /*request*/, v1::GetStatsResponse* response) {
  return RunUnary(context, "GetStats", [=, this]() -> absl::Status {
    *response = broker_->Stats();
    return absl::OkStatus();
  });
}

// One Query call. Life cycle: constructed on a reactor thread, which queues
// Start on a worker; each completed write queues Produce on a worker; the
// call ends with exactly one Finish, after which gRPC calls OnDone and the
// reactor deletes itself. Only one of Start/Produce runs at a time, because
// the next is queued only after the previous one's write completed.
class BrokerService::QueryReactor final
    : public grpc::ServerWriteReactor<v1::QueryResponse> {
 public:
  QueryReactor(BrokerService* service, grpc::CallbackServerContext* context,
               const v1::QueryRequest* request)
      : service_(service), context_(context), request_(request) {
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
        service_->broker_->StartQuery(*request_, SessionOf(*context_), [this] {
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
    const v1::QueryResponse* message = nullptr;
    absl::StatusOr<QueryRun::Progress> progress = producer_->Next(&message);
    if (!progress.ok()) {
      FinishWith(progress.status());
    } else if (*progress == QueryRun::Progress::kWaiting) {
      return;  // the run calls resume, which queues Produce again
    } else if (*progress == QueryRun::Progress::kDone) {
      FinishWith(absl::OkStatus());
    } else if (message->has_summary()) {
      // The last message: send it with the status in one go.
      StartWriteAndFinish(message, grpc::WriteOptions(), grpc::Status::OK);
    } else {
      // No buffer_hint here: a hinted write may not complete until a later
      // write flushes it, and the next write waits for this one to complete.
      StartWrite(message);
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
  const v1::QueryRequest* const request_;
  // run_, for the worker tasks: set once by Start, then used only by the
  // Produce calls that follow it one at a time.
  QueryRun* producer_ = nullptr;

  absl::Mutex mu_;  // between OnCancel (reactor thread) and Start (worker)
  std::unique_ptr<QueryRun> run_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

grpc::ServerWriteReactor<v1::QueryResponse>* BrokerService::Query(
    grpc::CallbackServerContext* context, const v1::QueryRequest* request) {
  return new QueryReactor(this, context, request);
}

}  // namespace connbroker::server
