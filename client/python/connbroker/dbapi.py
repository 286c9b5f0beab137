"""PEP 249 (DB-API 2.0) over connbrokerd.

    from connbroker import dbapi
    conn = dbapi.connect("analytics")            # a [connections.analytics]
    cur = conn.cursor()
    cur.execute("SELECT id, name FROM users WHERE id = ?", (42,))
    print(cur.description, cur.fetchall())
    conn.commit()

A Connection is one kept Session stream to the daemon plus the handle of the
shared connection `connect` resolved, as `st.connection(name, type,
max_entries, ttl, **kwargs)` would. Statements run on the daemon's pooled
backends; a transaction pins one backend to this stream until commit or
rollback, and the stream ending (close, process exit, crash) rolls it back.

Transactions begin by themselves, as the usual drivers do: before the first
statement on PostgreSQL and MySQL (psycopg2, mysqlclient), before the first
INSERT, UPDATE, DELETE or REPLACE on SQLite (the sqlite3 module), so readers
there take no write lock. `autocommit = True` runs every statement on its
own. Rows stream in batches as the daemon sends them: fetchone and fetchmany
hold one batch, not the whole result.

Parameters: `?` with a sequence (paramstyle qmark), or `:name` with a
mapping (named); the daemon binds them, never splices them into the SQL.
"""

import collections
import functools
import os

from connbroker import _columns, _sql, _transport, errors
from connbroker.errors import (  # noqa: F401 - PEP 249 module attributes
    DatabaseError, DataError, Error, IntegrityError, InterfaceError,
    InternalError, NotSupportedError, OperationalError, ProgrammingError,
    Warning)
from connbroker.v1 import broker_pb2, session_pb2

apilevel = "2.0"
# Threads may share the module, not connections: a connection is one stream
# whose answers come in order.
threadsafety = 1
paramstyle = "qmark"  # and "named", told apart by the parameters' type

_UNAVAILABLE = "UNAVAILABLE"
# Encoded requests of parameterless statements kept per connection.
_ENCODED_QUERIES_KEPT = 256


def _nothing_to_build(request, handle):
    pass


@functools.lru_cache(maxsize=512)
def _qmark_to_dollar(sql):
    return _sql.qmark_to_dollar(sql)[0]


# --- Type objects: compare equal to the type codes in description ---------

class _TypeObject:
    def __init__(self, name, kinds, words):
        self._name = name
        self._kinds = frozenset(kinds)
        self._words = tuple(words)

    def __eq__(self, type_code):
        if not isinstance(type_code, str):
            return NotImplemented
        code = type_code.lower()
        if code in self._kinds:
            return True
        return any(word in code for word in self._words)

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self):
        return hash(self._name)

    def __repr__(self):
        return f"dbapi.{self._name}"


STRING = _TypeObject("STRING", ["text"],
                     ["char", "text", "string", "json", "uuid", "enum", "set"])
BINARY = _TypeObject("BINARY", ["blob"], ["blob", "binary", "bytea", "bit"])
NUMBER = _TypeObject("NUMBER", ["int64", "double", "bool"],
                     ["int", "numeric", "decimal", "real", "double", "float",
                      "number", "serial", "bool", "year"])
DATETIME = _TypeObject("DATETIME", [], ["date", "time"])
ROWID = _TypeObject("ROWID", ["oid", "rowid"], [])

Binary = bytes


def Date(year, month, day):  # noqa: N802 - PEP 249 names
    import datetime
    return datetime.date(year, month, day)


def Time(hour, minute, second):  # noqa: N802
    import datetime
    return datetime.time(hour, minute, second)


def Timestamp(year, month, day, hour, minute, second):  # noqa: N802
    import datetime
    return datetime.datetime(year, month, day, hour, minute, second)


def DateFromTicks(ticks):  # noqa: N802
    import datetime
    return datetime.date.fromtimestamp(ticks)


def TimeFromTicks(ticks):  # noqa: N802
    import datetime
    return datetime.datetime.fromtimestamp(ticks).time()


def TimestampFromTicks(ticks):  # noqa: N802
    import datetime
    return datetime.datetime.fromtimestamp(ticks)


_KIND_NAMES = {
    _columns.KIND.VALUE_KIND_BOOL: "bool",
    _columns.KIND.VALUE_KIND_INT64: "int64",
    _columns.KIND.VALUE_KIND_DOUBLE: "double",
    _columns.KIND.VALUE_KIND_TEXT: "text",
    _columns.KIND.VALUE_KIND_BLOB: "blob",
}


def type_code(column):
    """The column's database type ("int8", "numeric(10,2)", "DATETIME"), or
    its storage class when the database declared none ("int64", "text")."""
    return column.database_type or _KIND_NAMES.get(column.kind, "")


def flavor_of(description):
    """Which database a connection's description ("postgresql://...")
    points at: "sqlite", "postgresql", "mysql", or "" for others."""
    scheme = description.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme.startswith("sqlite"):
        return "sqlite"
    if scheme.startswith("postgres"):
        return "postgresql"
    if scheme in ("mysql", "mariadb"):
        return "mysql"
    return ""


def connect(name, *, target=None, type=None, ttl=None, max_entries=None,
            broker_session=None, **kwargs):
    """A DB-API connection to the daemon's shared connection `name`.

    name, type, ttl, max_entries and kwargs mean what they mean to
    st.connection (kwargs win over the secrets section key by key). target
    is the daemon ("unix:/path" or "host:port"; default $CONNBROKER_TARGET,
    else the daemon's default socket); broker_session the client session id
    for connections whose section says scope = "session".
    """
    return Connection(name, target=target, type_=type, ttl=ttl,
                      max_entries=max_entries, session=broker_session,
                      kwargs=kwargs)


class Connection:
    """A PEP 249 connection: one Session stream and one broker handle."""

    Error = errors.Error
    Warning = errors.Warning
    InterfaceError = errors.InterfaceError
    DatabaseError = errors.DatabaseError
    DataError = errors.DataError
    OperationalError = errors.OperationalError
    IntegrityError = errors.IntegrityError
    InternalError = errors.InternalError
    ProgrammingError = errors.ProgrammingError
    NotSupportedError = errors.NotSupportedError

    def __init__(self, name, *, target=None, type_=None, ttl=None,
                 max_entries=None, session=None, kwargs=None):
        self.target = target or _transport.default_target()
        self._ca_file = os.environ.get("CONNBROKER_CA") or None
        self._token_file = os.environ.get("CONNBROKER_TOKEN_FILE") or None
        self._connect_request = _transport.connect_request(
            name, type_, ttl, max_entries, kwargs or {})
        self._metadata = _transport.call_metadata(session, self._token_file)
        self._stream = None
        self._closed = False
        self._autocommit = False
        self._lost_transaction = False
        self.handle = ""
        self.description = ""
        self.flavor = ""
        self._connect()

    # -- the stream and the handle --

    def _live_stream(self):
        if self._closed:
            raise errors.InterfaceError("the connection is closed")
        self._note_broken_stream()
        if self._lost_transaction:
            raise errors.OperationalError(
                "the connection to the daemon broke inside a transaction, "
                "which was rolled back: call rollback() before going on")
        if self._stream is None or self._stream.broken:
            channel = _transport.CHANNELS.get(self.target, self._ca_file,
                                              self._token_file)
            self._stream = _transport.Stream(channel, self._metadata)
        return self._stream

    def _note_broken_stream(self):
        if self._stream is not None and self._stream.broken and \
                self._stream.transaction_open:
            # The stream ended inside a transaction, which the daemon rolled
            # back. Statements fail until the application rolls back too, so
            # none meant for the transaction runs outside it.
            self._stream.transaction_open = False
            self._lost_transaction = True

    def _connect(self):
        request = session_pb2.SessionRequest()
        request.connect.CopyFrom(self._connect_request)
        try:
            answer = self._live_stream().call(request).connected
        except errors.Error as e:
            if e.code is not None and e.code.name == _UNAVAILABLE:
                # A daemon that is not there yet (just started) or a stream
                # that broke: once more on a fresh stream.
                answer = self._live_stream().call(request).connected
            else:
                raise
        self.handle = answer.handle
        self._encoded_queries = {}
        self.description = answer.description
        self.scope = answer.scope
        self.flavor = flavor_of(answer.description)

    def _encoded_query(self, sql, ttl_seconds, chunk_rows):
        """The encoded QueryRequest of a parameterless statement on this
        connection's handle, built once (the cache is dropped with the
        handle, and bounded)."""
        key = (sql, ttl_seconds, chunk_rows)
        encoded = self._encoded_queries.get(key)
        if encoded is None:
            request = broker_pb2.QueryRequest(sql=sql, chunk_rows=chunk_rows)
            request.target.handle = self.handle
            if ttl_seconds:
                request.ttl_seconds = ttl_seconds
            encoded = request.SerializeToString()
            if len(self._encoded_queries) >= _ENCODED_QUERIES_KEPT:
                self._encoded_queries.clear()
            self._encoded_queries[key] = encoded
        return encoded

    def _run(self, build, use, resend_if_broken=False):
        """Runs one request: build(request, target) fills it, use(stream,
        request) sends it and reads the answer. Outside a transaction, a
        handle the daemon forgot (it restarted) is connected again and the
        request sent once more; a read (resend_if_broken) is also re-sent
        once on a new stream when the old one broke."""
        for attempt in range(2):
            stream = self._live_stream()
            request = session_pb2.SessionRequest()
            build(request, self.handle)
            try:
                return use(stream, request)
            except errors.Error as e:
                if attempt == 1 or self._in_transaction or \
                        (stream.broken and stream.transaction_open):
                    raise
                if e.reason == "UNKNOWN_HANDLE":
                    self._connect()
                    continue
                if (resend_if_broken and stream.broken and
                        e.code is not None and e.code.name == _UNAVAILABLE):
                    continue
                raise
        raise AssertionError("unreachable")

    # -- transactions --

    @property
    def autocommit(self):
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value):
        if self._in_transaction and bool(value) != self._autocommit:
            raise errors.ProgrammingError(
                "autocommit cannot change inside a transaction: commit or "
                "roll back first")
        self._autocommit = bool(value)

    @property
    def _in_transaction(self):
        # The daemon's word, kept by the stream; a broken stream's
        # transaction was rolled back with it.
        stream = self._stream
        return stream is not None and not stream.broken and \
            stream.transaction_open

    @property
    def in_transaction(self):
        return self._in_transaction

    def _begin_before(self, sql):
        if self._autocommit or self._in_transaction:
            return
        if self.flavor == "sqlite" and not _sql.is_sqlite_dml(sql):
            return
        self.begin()

    def begin(self, isolation=0, read_only=False, deferrable=False):
        """Opens a transaction now (it opens by itself otherwise), with the
        daemon's options: isolation a session_pb2.BeginRequest.Isolation."""
        if self._in_transaction:
            raise errors.ProgrammingError("a transaction is already open")

        def build(request, handle):
            request.begin.target.handle = handle
            request.begin.isolation = isolation
            request.begin.read_only = read_only
            request.begin.deferrable = deferrable

        self._run(build, lambda stream, request: stream.call(request))

    def _end(self, field):
        if self._closed:
            raise errors.InterfaceError("the connection is closed")
        self._note_broken_stream()
        if self._lost_transaction:
            self._lost_transaction = False
            if field == "commit":
                raise errors.OperationalError(
                    "the transaction was rolled back when the connection to "
                    "the daemon broke; nothing was committed")
            return
        if not self._in_transaction:
            return
        request = session_pb2.SessionRequest()
        getattr(request, field).handle = self.handle
        self._stream.call(request)

    def commit(self):
        self._end("commit")

    def rollback(self):
        self._end("rollback")

    def close(self):
        if self._closed:
            return
        try:
            if self._in_transaction and self._stream and \
                    not self._stream.broken:
                self.rollback()
        except errors.Error:
            pass  # the stream ending rolls back too
        finally:
            if self._stream is not None:
                self._stream.close()
            self._closed = True

    @property
    def closed(self):
        return self._closed

    def cursor(self):
        if self._closed:
            raise errors.InterfaceError("the connection is closed")
        return Cursor(self)

    def _native_sql(self, sql, parameters):
        """qmark placeholders as the database numbers them: PostgreSQL takes
        $1, $2 (SQLite and MySQL take `?` as it is)."""
        if (self.flavor == "postgresql" and parameters is not None and
                not isinstance(parameters, dict) and "?" in sql):
            return _qmark_to_dollar(sql)
        return sql

    def reset(self):
        """st.connection's reset(): the daemon closes this connection's
        backends and drops its cached results."""
        def build(request, handle):
            request.reset.target.handle = handle
        return self._run(build, lambda s, r: s.call(r)).reset

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # As sqlite3 and psycopg2: commit on success, roll back on error;
        # the connection stays open.
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def __del__(self):
        try:
            if self._stream is not None:
                self._stream.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class Cursor:
    """A PEP 249 cursor: runs statements, streams rows batch by batch."""

    def __init__(self, connection):
        self.connection = connection
        self.arraysize = 1
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        self._reader = None
        self._columns = []
        self._rows = collections.deque()
        self._batches = None
        self._closed = False
        self.from_cache = False

    # -- running --

    def _check(self):
        if self._closed:
            raise errors.InterfaceError("the cursor is closed")
        if self.connection.closed:
            raise errors.InterfaceError("the connection is closed")

    def _drop_result(self):
        if self._reader is not None:
            self._reader.discard()
        self._reader = None
        self._batches = None
        self._rows.clear()
        self.description = None
        self.rowcount = -1
        self.lastrowid = None
        self.from_cache = False

    def execute(self, operation, parameters=None, *, ttl=None,
                chunk_rows=0):
        """Runs one statement. ttl (seconds) caches a query's result in the
        daemon's shared result cache, outside transactions."""
        self._check()
        self._drop_result()
        conn = self.connection
        rows = _sql.returns_rows(operation)
        seconds = _transport.ttl_seconds(ttl)
        # A query with a ttl reads the daemon's shared result cache, which
        # no transaction's reads go through: it opens none (inside one that
        # is open already it runs uncached, seeing the transaction's writes).
        if not (rows and seconds):
            conn._begin_before(operation)
        operation = conn._native_sql(operation, parameters)
        if rows:
            self._query(operation, parameters, seconds, chunk_rows)
        else:
            def build(request, handle):
                request.execute.target.handle = handle
                request.execute.sql = operation
                _transport.fill_params(request.execute.params, parameters)

            answer = conn._run(build, lambda s, r: s.call(r)).executed
            self.rowcount = answer.rows_affected
            if answer.last_insert_id or conn.flavor == "sqlite":
                self.lastrowid = answer.last_insert_id
        return self

    def _query(self, sql, parameters, seconds, chunk_rows):
        conn = self.connection
        if not parameters:
            # The same statement again (a dashboard's queries): its request
            # is kept encoded by the connection.
            def use(stream, request):
                return stream.query_encoded(
                    conn._encoded_query(sql, seconds, chunk_rows))
            reader = conn._run(_nothing_to_build, use, resend_if_broken=True)
        else:
            def build(request, handle):
                request.query.target.handle = handle
                request.query.sql = sql
                _transport.fill_params(request.query.params, parameters)
                if seconds:
                    request.query.ttl_seconds = seconds
                request.query.chunk_rows = chunk_rows

            reader = conn._run(build, lambda s, r: s.query(r),
                               resend_if_broken=True)
        self._reader = reader
        self._columns = list(reader.schema.columns)
        self.description = [
            (c.name, type_code(c), None, None, None, None, c.nullable)
            for c in self._columns
        ] or None
        self._batches = reader.batches()
        self._settle()

    def _settle(self):
        summary = self._reader.summary if self._reader else None
        if summary is not None:
            self.rowcount = summary.row_count
            self.from_cache = summary.from_cache

    def executemany(self, operation, seq_of_parameters):
        total = 0
        counted = False
        for parameters in seq_of_parameters:
            self.execute(operation, parameters)
            if self.rowcount >= 0:
                total += self.rowcount
                counted = True
        self.rowcount = total if counted else -1
        return self

    # -- fetching --

    def _take_batch(self):
        """The result's next RowBatch, or None once it is over (the summary
        is then read: rowcount, from_cache)."""
        if self._batches is None:
            return None
        batch = next(self._batches, None)
        if batch is None:
            self._batches = None
            self._settle()
            self._reader = None
        return batch

    def _next_batch(self):
        """Decodes the next batch into rows; False when the result is over."""
        batch = self._take_batch()
        if batch is None:
            return False
        flavor = self.connection.flavor
        columns = [
            _columns.python_values(
                column, _columns.decode_column(vector, batch.row_count),
                flavor)
            for column, vector in zip(self._columns, batch.columns)
        ]
        if columns:
            self._rows.extend(zip(*columns))
        else:
            self._rows.extend(() for _ in range(batch.row_count))
        return True

    def _require_result(self):
        self._check()
        if self.description is None and self._batches is None:
            raise errors.ProgrammingError("no result: the last statement "
                                          "returned no rows")

    def fetchone(self):
        self._require_result()
        while not self._rows:
            if not self._next_batch():
                return None
        return self._rows.popleft()

    def fetchmany(self, size=None):
        self._require_result()
        size = self.arraysize if size is None else size
        out = []
        while len(out) < size:
            if not self._rows and not self._next_batch():
                break
            while self._rows and len(out) < size:
                out.append(self._rows.popleft())
        return out

    def fetchall(self):
        self._require_result()
        while self._next_batch():
            pass
        out = list(self._rows)
        self._rows.clear()
        return out

    def __iter__(self):
        while True:
            row = self.fetchone()
            if row is None:
                return
            yield row

    def columns(self):
        """The result's columns as the daemon described them (name,
        database_type, kind, nullable)."""
        return list(self._columns)

    def column_batches(self):
        """The rest of the result as ([ColumnData, ...], row_count) a batch,
        undecoded into rows: what the DataFrame builder reads."""
        self._require_result()
        if self._rows:
            raise errors.ProgrammingError(
                "column_batches after rows were fetched")
        while (batch := self._take_batch()) is not None:
            yield [_columns.decode_column(v, batch.row_count)
                   for v in batch.columns], batch.row_count

    # -- the rest of PEP 249 --

    def close(self):
        if not self._closed:
            # rowcount and lastrowid stay readable, as with sqlite3 and
            # psycopg2: SQLAlchemy reads an INSERT's after closing the cursor.
            rowcount, lastrowid = self.rowcount, self.lastrowid
            self._drop_result()
            self.rowcount, self.lastrowid = rowcount, lastrowid
            self._closed = True

    def setinputsizes(self, sizes):
        pass

    def setoutputsize(self, size, column=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
