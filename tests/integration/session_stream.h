// SessionStream: a Session stream driven request by request through the
// generated stub, with no client library in between, for tests that must
// see exactly what the daemon sends (pipelining, ids, message counts).
#ifndef CONNBROKER_TESTS_INTEGRATION_SESSION_STREAM_H_
#define CONNBROKER_TESTS_INTEGRATION_SESSION_STREAM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "connbroker/v1/service.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace connbroker::testing {

class SessionStream {
 public:
  explicit SessionStream(const std::string& target,
                         const std::string& session_id = "")
      : stub_(v1::ConnectionBroker::NewStub(
            grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))) {
    if (!session_id.empty()) {
      context_.AddMetadata("connbroker-session", session_id);
    }
    stream_ = stub_->Session(&context_);
  }

  bool Send(const v1::SessionRequest& request) {
    return stream_->Write(request);
  }
  bool Read(v1::SessionResponse* response) { return stream_->Read(response); }
  void WritesDone() { stream_->WritesDone(); }
  grpc::Status Finish() { return stream_->Finish(); }
  void Cancel() { context_.TryCancel(); }

  // True when `message` ends the answer to its request.
  static bool Ends(const v1::SessionResponse& message) {
    return message.has_summary() || message.has_error() ||
           message.has_opened() || message.has_connected() ||
           message.has_executed() || message.has_transaction() ||
           message.has_reset();
  }

  // Reads the messages of the next answer (notices are kept aside).
  std::vector<v1::SessionResponse> NextAnswer() {
    std::vector<v1::SessionResponse> messages;
    v1::SessionResponse message;
    while (Read(&message)) {
      if (message.has_notice()) {
        notices_.push_back(message.notice());
        continue;
      }
      messages.push_back(message);
      if (Ends(message)) break;
    }
    return messages;
  }

  // Sends `request` with `id` and reads its answer.
  std::vector<v1::SessionResponse> Call(uint64_t id,
                                        v1::SessionRequest request) {
    request.set_id(id);
    if (!Send(request)) return {};
    return NextAnswer();
  }

  const std::vector<v1::SessionError>& notices() const { return notices_; }

 private:
  std::unique_ptr<v1::ConnectionBroker::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SessionRequest, v1::SessionResponse>>
      stream_;
  std::vector<v1::SessionError> notices_;
};

inline v1::SessionRequest QueryOn(const std::string& name,
                                  const std::string& sql) {
  v1::SessionRequest request;
  request.mutable_query()->mutable_target()->mutable_connect()->set_name(name);
  request.mutable_query()->set_sql(sql);
  return request;
}

inline v1::SessionRequest ExecuteOn(const std::string& name,
                                    const std::string& sql) {
  v1::SessionRequest request;
  request.mutable_execute()->mutable_target()->mutable_connect()->set_name(
      name);
  request.mutable_execute()->set_sql(sql);
  return request;
}

}  // namespace connbroker::testing

#endif  // CONNBROKER_TESTS_INTEGRATION_SESSION_STREAM_H_
