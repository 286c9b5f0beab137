// wire: protobuf <-> grpc::ByteBuffer without a gRPC-generated codec.
#include "server/wire.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"

namespace connbroker::server {

absl::Status DecodeRequest(const grpc::ByteBuffer& raw,
                           google::protobuf::Message* out) {
  grpc::ByteBuffer copy(raw);  // shares the slices; the reader needs it
  grpc::ProtoBufferReader reader(&copy);
  if (!out->ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request could not be decoded as a ", out->GetTypeName(), " (",
        raw.Length(),
        " bytes): it is not that protobuf message, or a string field holds "
        "invalid UTF-8"));
  }
  return absl::OkStatus();
}

absl::Status Encode(const google::protobuf::Message& message,
                    grpc::ByteBuffer* out) {
  out->Clear();  // the writer requires an empty buffer
  bool own_buffer = false;
  grpc::Status status = grpc::GenericSerialize<grpc::ProtoBufferWriter,
                                               google::protobuf::Message>(
      message, out, &own_buffer);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot encode the reply: ", status.error_message()));
  }
  return absl::OkStatus();
}

grpc::Slice SharedSlice(std::shared_ptr<const std::string> bytes) {
  auto* held = new std::shared_ptr<const std::string>(std::move(bytes));
  return grpc::Slice(
      const_cast<char*>((*held)->data()), (*held)->size(),
      [](void* held) {
        delete static_cast<std::shared_ptr<const std::string>*>(held);
      },
      held);
}

grpc::Slice EncodedSlice(const google::protobuf::Message& message) {
  auto bytes = std::make_shared<std::string>();
  message.SerializeToString(bytes.get());
  return SharedSlice(std::move(bytes));
}

std::string VarintField(int field, uint64_t value) {
  std::string bytes;
  google::protobuf::io::StringOutputStream stream(&bytes);
  {
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.WriteTag(static_cast<uint32_t>(field) << 3);  // wire type 0
    coded.WriteVarint64(value);
  }
  return bytes;
}

}  // namespace connbroker::server
