"""The daemon end of the client: channels, Session streams, request values.

Every call goes over a kept Session stream (proto/connbroker/v1/session.proto):
one message each way for a small request, a query's batches streamed as they
come. A stream carries one request at a time from this side's point of view
(`Stream.call` and `Stream.query`); the daemon answers in order, so a reader
that stops part-way is cancelled and drained before the next request.
"""

import datetime
import decimal
import os
import queue
import threading
import uuid

import grpc

from connbroker import errors
from connbroker.v1 import broker_pb2, session_pb2, values_pb2

SESSION_METHOD = "/connbroker.v1.ConnectionBroker/Session"
_SESSION_KEY = "connbroker-session"
# gRPC's default 4 MiB is below what one SessionResponse may carry (a batch
# is cut near 1 MiB, but a single wide row can be larger).
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def default_target():
    """$CONNBROKER_TARGET, else the daemon's default socket (as the CLI)."""
    target = os.environ.get("CONNBROKER_TARGET")
    if target:
        return target
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return f"unix:{runtime_dir}/connbroker.sock"
    return f"unix:/tmp/connbroker-{os.getuid()}/connbroker.sock"


def _load_native():
    """The gRPC C++ transport (_native.cc), unless $CONNBROKER_TRANSPORT is
    "grpcio" or it was not built; None means grpcio."""
    if os.environ.get("CONNBROKER_TRANSPORT", "") == "grpcio":
        return None
    try:
        from connbroker import _native
    except ImportError:
        if os.environ.get("CONNBROKER_TRANSPORT", "") == "native":
            raise
        return None
    return _native


_NATIVE = _load_native()
TRANSPORT = "native" if _NATIVE is not None else "grpcio"


class _Channels:
    """One channel per (target, credentials) per process.

    A channel is safe to share between threads, and opening one costs a
    connection setup, so every connection of a process to the same daemon
    shares it. A forked child gets channels of its own: gRPC channels do not
    survive fork.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._channels = {}

    def get(self, target, ca_file, token_file):
        key = (target, ca_file, token_file)
        with self._lock:
            if self._pid != os.getpid():
                self._channels = {}
                self._pid = os.getpid()
            channel = self._channels.get(key)
            if channel is None:
                channel = _open_channel(target, ca_file)
                self._channels[key] = channel
            return channel


def _open_channel(target, ca_file):
    roots = None
    if not target.startswith("unix:") and ca_file:
        with open(ca_file, "rb") as f:
            roots = f.read()
    if _NATIVE is not None:
        return _NATIVE.Channel(target, roots, _MAX_MESSAGE_BYTES)
    options = [
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        # Come back quickly after a daemon restart instead of after gRPC's
        # growing backoff.
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if roots is None:
        return grpc.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.secure_channel(target, credentials, options=options)


CHANNELS = _Channels()


def call_metadata(session, token_file):
    """Metadata of a call: the client session id and the bearer token."""
    metadata = []
    if session:
        metadata.append((_SESSION_KEY, session))
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise errors.InterfaceError(
                f"cannot read the token file {token_file}: {e.strerror}"
            ) from None
        metadata.append(("authorization", f"Bearer {token}"))
    return tuple(metadata)


# --- Values: kwargs and query parameters ----------------------------------


def to_value(value, out=None):
    """A Python value as a connbroker.v1.Value.

    Types the wire has no scalar for travel as text the databases parse:
    Decimal exactly, dates and times in ISO 8601, UUIDs in their canonical
    form.
    """
    v = values_pb2.Value() if out is None else out
    if value is None:
        v.null_value = values_pb2.NULL_VALUE
    elif isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise errors.DataError(f"integer {value} does not fit in 64 bits")
        v.int64_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, str):
        v.text_value = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        v.blob_value = bytes(value)
    elif isinstance(value, decimal.Decimal):
        v.text_value = str(value)
    elif isinstance(value, datetime.datetime):
        v.text_value = value.isoformat(sep=" ")
    elif isinstance(value, (datetime.date, datetime.time)):
        v.text_value = value.isoformat()
    elif isinstance(value, uuid.UUID):
        v.text_value = str(value)
    elif hasattr(value, "item") and callable(value.item):
        # A numpy scalar (as pandas hands out): its Python equivalent.
        return to_value(value.item(), v)
    else:
        raise errors.ProgrammingError(
            f"cannot send a {type(value).__name__} as a parameter or kwarg"
        )
    return v


def fill_kwargs(kwargs_map, kwargs, prefix=""):
    """Fills a map<string, Value> from kwargs; nested dicts become dotted keys
    ("create_engine_kwargs.pool_size"), as the daemon expects."""
    for key, value in kwargs.items():
        if isinstance(value, dict):
            fill_kwargs(kwargs_map, value, f"{prefix}{key}.")
        else:
            to_value(value, kwargs_map[f"{prefix}{key}"])


def fill_params(params_msg, params):
    """Positional (sequence) or named (mapping) parameters into Params."""
    if params is None:
        return
    if isinstance(params, dict):
        for key, value in params.items():
            to_value(value, params_msg.named[str(key)])
    elif isinstance(params, (str, bytes)):
        raise errors.ProgrammingError(
            "parameters must be a sequence or a mapping, not a string"
        )
    else:
        for value in params:
            to_value(value, params_msg.positional.add())


def ttl_seconds(ttl):
    """Streamlit's ttl spellings: seconds, a timedelta, or "1h"-style text."""
    if ttl is None:
        return None
    if isinstance(ttl, datetime.timedelta):
        return ttl.total_seconds()
    if isinstance(ttl, str):
        import pandas  # only for its duration parser

        return pandas.Timedelta(ttl).total_seconds()
    return float(ttl)


def connect_request(name, type_, ttl, max_entries, kwargs):
    request = broker_pb2.ConnectRequest(name=name, type=type_ or "")
    seconds = ttl_seconds(ttl)
    if seconds is not None:
        request.ttl_seconds = seconds
    if max_entries is not None:
        request.max_entries = int(max_entries)
    fill_kwargs(request.kwargs, kwargs)
    return request


# --- The Session stream ---------------------------------------------------

_END = object()


def _varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_query_request(request_id, query_request):
    """The encoding of SessionRequest{id: request_id, query: <the encoded
    QueryRequest>}, without building the message: its fields 1 (varint) and
    4 (length-delimited), as session.proto numbers them. A small query's
    client time is mostly such message building, so a repeated statement's
    QueryRequest is kept encoded and only the id changes."""
    return b"".join((b"\x08", _varint(request_id), b"\x22",
                     _varint(len(query_request)), query_request))


class Stream:
    """One Session call, used by one thread at a time.

    Requests are written and answers read through the transport's call
    (_NativeCall, or _GrpcioCall without the extension). `broken` turns
    true when the call ended (daemon restart, network, an interrupted
    read), after which a new Stream is needed.
    """

    def __init__(self, channel, metadata):
        if _NATIVE is not None:
            self._call = _NativeCall(channel, metadata)
        else:
            self._call = _GrpcioCall(channel, metadata)
        self._next_id = 1
        self._closed = False
        self._reader = None  # the QueryReader whose answer is being read
        self.broken = False
        self.notices = []  # SessionErrors the daemon sent unasked
        # Whether the daemon holds a transaction open for this stream, as its
        # last TransactionState said: a statement can end one (COMMIT as
        # SQL, MySQL's DDL, an error that aborts it).
        self.transaction_open = False

    def close(self):
        if not self._closed:
            self._closed = True
            self.broken = True
            self._call.close()

    def send(self, request):
        """Writes a request (after finishing any unread answer); its id."""
        def encode(request_id):
            request.id = request_id
            return request.SerializeToString()
        return self._send(encode)

    def _send(self, encode, finish_reader=True):
        """Writes encode(id) under the next request id; that id. An unread
        answer is read into memory first, unless this is its own cancel."""
        if finish_reader and self._reader is not None:
            self._reader.finish()
        request_id = self._next_id
        self._next_id += 1
        data = encode(request_id)
        try:
            self._call.write(data)
        except BaseException:
            # Also KeyboardInterrupt: where the stream stands is unknown.
            self.broken = True
            raise
        return request_id

    def receive(self, request_id):
        """The next message answering request_id; raises on an error."""
        while True:
            try:
                response = session_pb2.SessionResponse.FromString(
                    self._call.read())
            except BaseException:
                # An interrupted read (Ctrl-C) leaves the rest of an answer
                # unread: the stream cannot be used again.
                self.broken = True
                raise
            if response.id == 0 and response.HasField("notice"):
                self.notices.append(response.notice)
                continue
            if response.HasField("transaction"):
                self.transaction_open = response.transaction.open
            if response.id != request_id:
                # An answer to a request this side gave up on (cancelled
                # reader): skip it.
                continue
            if response.HasField("error"):
                raise errors.from_session_error(response.error)
            return response

    def call(self, request):
        """Sends a request whose answer is one message, and returns it."""
        return self.receive(self.send(request))

    def query(self, request):
        """Sends a query; a QueryReader over its answer."""
        return self._read_answer(self.send(request))

    def query_encoded(self, query_request):
        """query() for an encoded QueryRequest (a repeated statement's,
        kept encoded by the caller): only the id is encoded here."""
        return self._read_answer(self._send(
            lambda request_id: encode_query_request(request_id,
                                                    query_request)))

    def _read_answer(self, request_id):
        first = self.receive(request_id)
        reader = QueryReader(self, request_id, first)
        if not reader.done:
            self._reader = reader
        return reader

    def cancel(self, request_id):
        """Asks the daemon to stop request_id, whose answer is being read."""
        cancel = session_pb2.SessionRequest()
        cancel.cancel.id = request_id

        def encode(cancel_id):
            cancel.id = cancel_id
            return cancel.SerializeToString()
        self._send(encode, finish_reader=False)

    def _release(self, reader):
        if self._reader is reader:
            self._reader = None


class _GrpcioCall:
    """A Session call on grpcio: requests go through a queue that grpcio's
    own thread drains; answers are read from its response iterator."""

    def __init__(self, channel, metadata):
        self._requests = queue.SimpleQueue()
        session = channel.stream_stream(
            SESSION_METHOD, request_serializer=None,
            response_deserializer=None)  # bytes both ways
        self._responses = session(iter(self._requests.get, _END),
                                  metadata=metadata)

    def write(self, data):
        self._requests.put(data)

    def read(self):
        try:
            return next(self._responses)
        except StopIteration:
            raise errors.OperationalError(
                "the daemon ended the session stream") from None
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def close(self):
        self._requests.put(_END)
        self._responses.cancel()


class _NativeCall:
    """A Session call on gRPC C++ (_native.cc): written and read from the
    calling thread, no hand-off between threads."""

    def __init__(self, channel, metadata):
        self._stream = _NATIVE.Stream(channel, metadata)

    def write(self, data):
        if not self._stream.write(data):
            self._ended()

    def read(self):
        data = self._stream.read()
        if data is None:
            self._ended()
        return data

    def _ended(self):
        code, message = self._stream.finish()
        if code == grpc.StatusCode.CANCELLED.value[0] and not message:
            raise errors.OperationalError(
                "the stream to the daemon was cancelled (interrupted)",
                code=grpc.StatusCode.CANCELLED)
        if code == 0:
            raise errors.OperationalError(
                "the daemon ended the session stream")
        raise errors.from_status(code, message)

    def close(self):
        self._stream.finish()


class QueryReader:
    """A query's answer read message by message: schema, batches, summary."""

    def __init__(self, stream, request_id, first):
        self._stream = stream
        self._id = request_id
        self.schema = first.schema
        self.summary = None
        self._pending = [first] if first.HasField("batch") else []
        self._buffered = False
        self.done = False
        self._take_summary(first)

    def _take_summary(self, response):
        if response.HasField("summary"):
            self.summary = response.summary
            self.done = True
            self._stream._release(self)

    def batches(self):
        """Yields each RowBatch as it arrives."""
        while True:
            while self._pending:
                yield self._pending.pop(0).batch
            if self.done:
                return
            response = self._stream.receive(self._id)
            self._take_summary(response)
            if response.HasField("batch"):
                self._pending.append(response)

    def finish(self):
        """Reads the rest of the answer into memory, because the stream is
        needed for another request (another cursor of the connection)."""
        while not self.done:
            response = self._stream.receive(self._id)
            self._take_summary(response)
            if response.HasField("batch"):
                self._pending.append(response)

    def discard(self):
        """Drops the rest of the answer: cancels the query on the daemon and
        skips what it already sent."""
        self._pending = []
        if self.done:
            return
        self._stream.cancel(self._id)
        try:
            while not self.done:
                response = self._stream.receive(self._id)
                self._take_summary(response)
        except errors.Error:
            # The cancel's own CANCELLED answer (or the stream broke): the
            # answer is over either way.
            self.done = True
            self._stream._release(self)
