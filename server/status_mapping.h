// The one place where broker errors become gRPC statuses.
//
// An absl::Status keeps its code and message (codes map one to one). The
// reason a client acts on (UNKNOWN_HANDLE: Connect again; BACKEND: retryable)
// travels beside it as a serialized v1::ErrorDetail in the binary trailer
// "connbroker-error-bin"; the broker attaches it to the status as a payload
// so the modules that know the reason need not know gRPC.
#ifndef CONNBROKER_SERVER_STATUS_MAPPING_H_
#define CONNBROKER_SERVER_STATUS_MAPPING_H_

#include <string>

#include "absl/status/status.h"
#include "connbroker/v1/broker.pb.h"
#include "connbroker/v1/session.pb.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace connbroker::server {

inline constexpr char kErrorDetailTrailer[] = "connbroker-error-bin";

// Returns `status` with `reason` attached (overriding one already there).
absl::Status WithReason(absl::Status status, v1::ErrorDetail::Reason reason);

// The ErrorDetail of `status`: its attached reason, else one derived from the
// code (UNAVAILABLE: BACKEND, RESOURCE_EXHAUSTED: POOL_EXHAUSTED, ...).
v1::ErrorDetail DetailOf(const absl::Status& status);

// Converts `status`, adding the ErrorDetail trailer to `context` when it is
// an error. REQUIRES: the call has not been finished yet.
grpc::Status ToGrpcStatus(const absl::Status& status,
                          grpc::CallbackServerContext* context);

// The status message as a client is sent it: at most 4 KiB.
std::string CappedMessage(const absl::Status& status);

// `status` (an error) as a Session stream answers one request with it.
v1::SessionError ToSessionError(const absl::Status& status);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_STATUS_MAPPING_H_
