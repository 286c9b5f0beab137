// BrokerService: the ConnectionBroker gRPC service, a thin shell over Broker.
//
// Every method runs on gRPC's callback reactors, which must never block, so
// each call's work is handed to the WorkerPool and the reactor is finished
// from there. Query streams one message per write: the next batch is produced
// only when the previous write completed, so a slow reader slows the database
// cursor instead of growing memory. Only cursor reads go to a worker; what a
// run already holds is written from the reactor, and a query following an
// identical one in flight holds no thread until the cache calls it back.
//
// The methods take their requests as raw bytes and decode them here: gRPC's
// typed handlers answer an undecodable request UNIMPLEMENTED with no message,
// which tells a client nothing; here it is INVALID_ARGUMENT saying what could
// not be read. Each call's Caller (who, which names, admin, session) comes
// from the Authenticator before any work is done.
#ifndef CONNBROKER_SERVER_BROKER_SERVICE_H_
#define CONNBROKER_SERVER_BROKER_SERVICE_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "connbroker/v1/service.grpc.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/broker.h"
#include "server/caller.h"
#include "server/session_reactor.h"
#include "server/worker_pool.h"

namespace connbroker::server {

// Every method of ConnectionBroker, raw (grpc::ByteBuffer in and out).
using RawConnectionBrokerService =
    v1::ConnectionBroker::WithRawCallbackMethod_Connect<
        v1::ConnectionBroker::WithRawCallbackMethod_Query<
            v1::ConnectionBroker::WithRawCallbackMethod_Execute<
                v1::ConnectionBroker::WithRawCallbackMethod_Reset<
                    v1::ConnectionBroker::WithRawCallbackMethod_ListConnections<
                        v1::ConnectionBroker::WithRawCallbackMethod_GetStats<
                            v1::ConnectionBroker::WithRawCallbackMethod_Session<
                                v1::ConnectionBroker::Service>>>>>>>;

class BrokerService final : public RawConnectionBrokerService {
 public:
  // Who is calling: built from the transport and metadata of a call
  // (AccessPolicy); an error (UNAUTHENTICATED) ends the call. Runs on a
  // reactor thread: it must not block. Unset: every caller is the Unix
  // socket's, with the call's session id.
  using Authenticator = std::function<absl::StatusOr<Caller>(
      const grpc::CallbackServerContext& context, std::string session)>;

  // `broker` and `workers` must outlive the service.
  BrokerService(Broker* broker, WorkerPool* workers,
                Authenticator authenticate = nullptr)
      : broker_(broker),
        workers_(workers),
        authenticate_(std::move(authenticate)) {}

  grpc::ServerUnaryReactor* Connect(grpc::CallbackServerContext* context,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Query(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Execute(grpc::CallbackServerContext* context,
                                    const grpc::ByteBuffer* request,
                                    grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Reset(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListConnections(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  // One client session's stream (see SessionReactor).
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Session(
      grpc::CallbackServerContext* context) override;

  // Ends every session stream once its requests are answered (at once when
  // idle): call as the daemon starts draining, before Server::Shutdown.
  void EndSessions() { sessions_.DrainAll(); }

 private:
  class QueryReactor;
  class ExecuteReactor;

  // The caller of `context`, or why it may not call.
  absl::StatusOr<Caller> CallerOf(const grpc::CallbackServerContext& context);

  // Decodes `raw` into `request` and authenticates the call: the Caller, or
  // the error to finish the call with (INVALID_ARGUMENT, UNAUTHENTICATED).
  template <typename Request>
  absl::StatusOr<Caller> Admit(const grpc::CallbackServerContext& context,
                               const grpc::ByteBuffer& raw, Request* request);

  // Decodes `raw` as a Request, authenticates, and runs `work(request,
  // caller)` on a worker; the Response it returns is encoded into
  // `response` and the unary call finished with its status.
  template <typename Request, typename Response, typename Work>
  grpc::ServerUnaryReactor* RunUnary(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* raw,
                                     grpc::ByteBuffer* response,
                                     const char* method, Work work);

  Broker* const broker_;
  WorkerPool* const workers_;
  const Authenticator authenticate_;
  SessionSet sessions_;
};

// The caller's session id: the "connbroker-session" metadata, or "".
std::string SessionOf(const grpc::CallbackServerContext& context);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_BROKER_SERVICE_H_
