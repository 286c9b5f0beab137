// BrokerService: the ConnectionBroker gRPC service, a thin shell over Broker.
//
// Every method runs on gRPC's callback reactors, which must never block, so
// each call's work is handed to the WorkerPool and the reactor is finished
// from there. Query streams one message per write: the next batch is produced
// only when the previous write completed, so a slow reader slows the database
// cursor instead of growing memory. Only cursor reads go to a worker; what a
// run already holds is written from the reactor, and a query following an
// identical one in flight holds no thread until the cache calls it back.
#ifndef CONNBROKER_SERVER_BROKER_SERVICE_H_
#define CONNBROKER_SERVER_BROKER_SERVICE_H_

#include "connbroker/v1/service.grpc.pb.h"
#include "server/broker.h"
#include "server/worker_pool.h"

namespace connbroker::server {

class BrokerService final : public v1::ConnectionBroker::CallbackService {
 public:
  // `broker` and `workers` must outlive the service.
  BrokerService(Broker* broker, WorkerPool* workers)
      : broker_(broker), workers_(workers) {}

  grpc::ServerUnaryReactor* Connect(grpc::CallbackServerContext* context,
                                    const v1::ConnectRequest* request,
                                    v1::ConnectResponse* response) override;
  grpc::ServerWriteReactor<v1::QueryResponse>* Query(
      grpc::CallbackServerContext* context,
      const v1::QueryRequest* request) override;
  grpc::ServerUnaryReactor* Execute(grpc::CallbackServerContext* context,
                                    const v1::ExecuteRequest* request,
                                    v1::ExecuteResponse* response) override;
  grpc::ServerUnaryReactor* Reset(grpc::CallbackServerContext* context,
                                  const v1::ResetRequest* request,
                                  v1::ResetResponse* response) override;
  grpc::ServerUnaryReactor* ListConnections(
      grpc::CallbackServerContext* context,
      const v1::ListConnectionsRequest* request,
      v1::ListConnectionsResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;

 private:
  class QueryReactor;
  class ExecuteReactor;

  // Runs `work` on a worker and finishes the unary call with its status.
  template <typename Work>
  grpc::ServerUnaryReactor* RunUnary(grpc::CallbackServerContext* context,
                                     const char* method, Work work);

  Broker* const broker_;
  WorkerPool* const workers_;
};

// The caller's session id: the "connbroker-session" metadata, or "".
std::string SessionOf(const grpc::CallbackServerContext& context);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_BROKER_SERVICE_H_
