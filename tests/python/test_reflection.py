"""Any gRPC client, by server reflection alone.

A reflection-driven tool (grpcurl, Postman, Evans) has no compiled stubs of
the service: it asks the daemon's reflection service for the file that
defines connbroker.v1.ConnectionBroker, builds message classes from the
descriptors it gets back, and calls the methods by name. This test does the
same, with the reflection protocol's few messages built here as descriptors
(grpc.reflection.v1alpha, as gRPC 1.51 serves it) and none of the package's
generated modules imported.
"""

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "connbroker.v1.ConnectionBroker"


def _reflection_messages():
    """ServerReflectionRequest/Response, with only the fields used here,
    declared as a FileDescriptorProto (field numbers as the reflection
    protocol defines them)."""
    f = descriptor_pb2.FileDescriptorProto(
        name="test_reflection_subset.proto",
        package="grpc.reflection.v1alpha", syntax="proto3")
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    message = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    bytes_ = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    int32 = descriptor_pb2.FieldDescriptorProto.TYPE_INT32
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

    def add(name, fields):
        m = f.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = m.field.add(name=field_name, number=number, type=kind,
                                label=label)
            if type_name:
                field.type_name = f".grpc.reflection.v1alpha.{type_name}"

    add("ServerReflectionRequest", [
        ("host", 1, string, optional, None),
        ("file_containing_symbol", 4, string, optional, None),
        ("list_services", 7, string, optional, None),
    ])
    add("FileDescriptorResponse", [
        ("file_descriptor_proto", 1, bytes_, repeated, None),
    ])
    add("ServiceResponse", [("name", 1, string, optional, None)])
    add("ListServiceResponse", [
        ("service", 1, message, repeated, "ServiceResponse"),
    ])
    add("ErrorResponse", [
        ("error_code", 1, int32, optional, None),
        ("error_message", 2, string, optional, None),
    ])
    add("ServerReflectionResponse", [
        ("valid_host", 1, string, optional, None),
        ("file_descriptor_response", 4, message, optional,
         "FileDescriptorResponse"),
        ("list_services_response", 6, message, optional,
         "ListServiceResponse"),
        ("error_response", 7, message, optional, "ErrorResponse"),
    ])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return (message_class(pool.FindMessageTypeByName(
                "grpc.reflection.v1alpha.ServerReflectionRequest")),
            message_class(pool.FindMessageTypeByName(
                "grpc.reflection.v1alpha.ServerReflectionResponse")))


def message_class(descriptor):
    """The Python class of a message descriptor (protobuf 4.21's spelling;
    newer releases also have message_factory.GetMessageClass)."""
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(
        descriptor)


class ReflectionClient:
    def __init__(self, channel):
        self.request_class, self.response_class = _reflection_messages()
        self.call = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=self.request_class.SerializeToString,
            response_deserializer=self.response_class.FromString)

    def ask(self, **fields):
        responses = list(self.call(iter([self.request_class(**fields)]),
                                   timeout=10))
        assert len(responses) == 1
        return responses[0]


def _pool_from_reflection(client, symbol):
    """A DescriptorPool of the file defining symbol and every file it
    imports, each fetched from the daemon."""
    answer = client.ask(file_containing_symbol=symbol)
    assert not answer.HasField("error_response"), (
        answer.error_response.error_message)
    files = {}
    for encoded in answer.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(encoded)
        files[proto.name] = proto
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        if name not in files:
            # The daemon sends the dependencies too; ask for any it did not.
            extra = client.ask(file_containing_symbol=name)
            for encoded in extra.file_descriptor_response.file_descriptor_proto:
                proto = descriptor_pb2.FileDescriptorProto.FromString(encoded)
                files.setdefault(proto.name, proto)
        for dependency in files[name].dependency:
            add(dependency)
        pool.Add(files[name])
        added.add(name)

    for name in list(files):
        add(name)
    return pool


@pytest.fixture
def channel(daemon):
    with grpc.insecure_channel(daemon.target) as ch:
        yield ch


def test_reflection_lists_the_service(channel):
    client = ReflectionClient(channel)
    answer = client.ask(list_services="*")
    names = [s.name for s in answer.list_services_response.service]
    assert SERVICE in names


def test_reflection_describes_the_service(channel):
    pool = _pool_from_reflection(ReflectionClient(channel), SERVICE)
    service = pool.FindServiceByName(SERVICE)
    methods = {m.name: m for m in service.methods}
    assert {"Connect", "Query", "Execute", "Session"} <= set(methods)
    assert methods["Query"].output_type.full_name == \
        "connbroker.v1.QueryResponse"
    assert methods["Session"].input_type.full_name == \
        "connbroker.v1.SessionRequest"


def test_a_client_built_from_reflection_connects_and_queries(channel, daemon):
    pool = _pool_from_reflection(ReflectionClient(channel), SERVICE)
    service = pool.FindServiceByName(SERVICE)
    methods = {m.name: m for m in service.methods}

    connect = methods["Connect"]
    connect_call = channel.unary_unary(
        f"/{SERVICE}/Connect",
        request_serializer=message_class(connect.input_type).SerializeToString,
        response_deserializer=message_class(connect.output_type).FromString)
    connected = connect_call(message_class(connect.input_type)(name="sqlite"),
                             timeout=10)
    assert connected.handle
    assert connected.description.startswith("sqlite:")

    query = methods["Query"]
    request_class = message_class(query.input_type)
    request = request_class(sql="SELECT 40 + ? AS answer, 'reflected' AS how")
    request.target.handle = connected.handle
    positional = request.params.positional.add()
    positional.int64_value = 2
    query_call = channel.unary_stream(
        f"/{SERVICE}/Query",
        request_serializer=request_class.SerializeToString,
        response_deserializer=message_class(query.output_type).FromString)
    parts = list(query_call(request, timeout=10))
    schema = [p.schema for p in parts if p.WhichOneof("part") == "schema"]
    batches = [p.batch for p in parts if p.WhichOneof("part") == "batch"]
    summary = [p.summary for p in parts if p.WhichOneof("part") == "summary"]
    assert [c.name for c in schema[0].columns] == ["answer", "how"]
    assert len(batches) == 1 and batches[0].row_count == 1
    assert list(batches[0].columns[0].int64s.values) == [42]
    assert list(batches[0].columns[1].texts.values) == ["reflected"]
    assert summary[0].row_count == 1
    assert summary[0].handle == connected.handle
