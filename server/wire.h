// wire: protobuf messages to and from the raw grpc::ByteBuffers the service
// methods take, shared by the unary calls, Query and the Session stream.
#ifndef CONNBROKER_SERVER_WIRE_H_
#define CONNBROKER_SERVER_WIRE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace connbroker::server {

// Decodes `raw` into `out`; INVALID_ARGUMENT naming the message type when
// the bytes are not one (a client sending garbage learns what was expected).
absl::Status DecodeRequest(const grpc::ByteBuffer& raw,
                           google::protobuf::Message* out);

// Encodes `message` into `out` (cleared first).
absl::Status Encode(const google::protobuf::Message& message,
                    grpc::ByteBuffer* out);

// A slice of `bytes` without copying them: it holds a reference to them (a
// cached result's) until gRPC is done with it.
grpc::Slice SharedSlice(std::shared_ptr<const std::string> bytes);

// `message` encoded, as a slice that owns the bytes.
grpc::Slice EncodedSlice(const google::protobuf::Message& message);

// A varint field `field` = `value`, encoded (appending it to an encoded
// message sets that field).
std::string VarintField(int field, uint64_t value);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_WIRE_H_
