// Maps absl::Status to grpc::Status plus the connbroker-error-bin trailer.
#include "server/status_mapping.h"

#include <string>

#include "absl/strings/cord.h"
#include "server/drivers/database.h"

namespace connbroker::server {
namespace {

constexpr char kReasonPayload[] = "connbroker.v1/ErrorDetail.Reason";

v1::ErrorDetail::Reason ReasonFromCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
      return v1::ErrorDetail::BACKEND;
    case absl::StatusCode::kResourceExhausted:
      return v1::ErrorDetail::POOL_EXHAUSTED;
    case absl::StatusCode::kFailedPrecondition:
      return v1::ErrorDetail::CONFIG;
    default:
      return v1::ErrorDetail::REASON_UNSPECIFIED;
  }
}

}  // namespace

absl::Status WithReason(absl::Status status, v1::ErrorDetail::Reason reason) {
  if (status.ok()) return status;
  status.SetPayload(kReasonPayload,
                    absl::Cord(v1::ErrorDetail::Reason_Name(reason)));
  return status;
}

v1::ErrorDetail DetailOf(const absl::Status& status) {
  v1::ErrorDetail detail;
  detail.set_reason(ReasonFromCode(status.code()));
  if (auto payload = status.GetPayload(kReasonPayload)) {
    v1::ErrorDetail::Reason reason;
    if (v1::ErrorDetail::Reason_Parse(std::string(*payload), &reason)) {
      detail.set_reason(reason);
    }
  }
  detail.set_sqlstate(SqlStateOf(status));
  if (detail.reason() == v1::ErrorDetail::REASON_UNSPECIFIED &&
      !detail.sqlstate().empty()) {
    detail.set_reason(v1::ErrorDetail::SQL);
  }
  detail.set_retryable(status.code() == absl::StatusCode::kUnavailable ||
                       status.code() == absl::StatusCode::kAborted ||
                       status.code() == absl::StatusCode::kResourceExhausted);
  return detail;
}

grpc::Status ToGrpcStatus(const absl::Status& status,
                          grpc::CallbackServerContext* context) {
  if (status.ok()) return grpc::Status::OK;
  context->AddTrailingMetadata(kErrorDetailTrailer,
                               DetailOf(status).SerializeAsString());
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      CappedMessage(status));
}

std::string CappedMessage(const absl::Status& status) {
  // The message travels in a trailer, which gRPC bounds (8 KiB by default):
  // a longer one would replace a clear error with a transport failure.
  // Messages quote a client's input cut short already; this is the net.
  constexpr size_t kMaxMessage = 4096;
  absl::string_view message = status.message();
  std::string text(message.substr(0, kMaxMessage));
  if (message.size() > kMaxMessage) text += "... (message cut)";
  return text;
}

v1::SessionError ToSessionError(const absl::Status& status) {
  v1::SessionError error;
  error.set_code(static_cast<int32_t>(status.code()));
  error.set_message(CappedMessage(status));
  *error.mutable_detail() = DetailOf(status);
  return error;
}

}  // namespace connbroker::server
