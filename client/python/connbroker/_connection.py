"""st.connection for scripts without Streamlit: SQLConnection's API, served
by the daemon.

    conn = connbroker.connection("analytics")
    df = conn.query("SELECT * FROM sales WHERE region = :r",
                    params={"r": "EU"}, ttl=600)
    with conn.session() as s:
        s.execute("UPDATE stock SET n = n - 1 WHERE id = :id", {"id": 7})

query() behaves as Streamlit's SQLConnection.query: its result is cached,
for `ttl` when given and until reset() when not (ttl=None, Streamlit's
default) -- here in the daemon's result cache, shared by every process that
asks the same question of the same connection. ttl=0 runs it every time.
"""

import contextlib

from connbroker import _frames, _sql, _transport, dbapi

# What ttl=None means for query(): Streamlit caches such a result for the
# life of the app, so the daemon keeps it as long as it keeps anything (a
# year; reset(), eviction or the daemon's memory bounds drop it sooner).
_CACHE_FOREVER_SECONDS = 365 * 24 * 3600.0


class SQLConnection:
    """A shared connection of the daemon, used the way Streamlit's
    SQLConnection is: query() to DataFrames, session() for writes, reset()."""

    def __init__(self, name, type=None, max_entries=None, ttl=None,
                 target=None, **kwargs):
        self._name = name
        # One DB-API connection (one kept Session stream) for query(); each
        # session() opens its own, so a transaction never shares a stream
        # with a query another thread is reading.
        self._connect_args = dict(target=target, type=type, ttl=ttl,
                                  max_entries=max_entries, **kwargs)
        self._dbapi = dbapi.connect(name, **self._connect_args)
        self._dbapi.autocommit = True

    @property
    def name(self):
        return self._name

    @property
    def handle(self):
        """The daemon's handle of the shared connection."""
        return self._dbapi.handle

    @property
    def description(self):
        """Where it points, secrets masked ("postgresql://u:***@h/db")."""
        return self._dbapi.description

    @property
    def driver(self):
        return "connbroker"

    def query(self, sql, *, ttl=None, index_col=None, chunksize=None,
              params=None, **kwargs):
        """Runs a read-only query and returns a DataFrame (an iterator of
        DataFrames with chunksize). Cached in the daemon for ttl seconds
        (or a timedelta, or "1h"); ttl=None caches until reset(), as
        Streamlit does; ttl=0 does not cache."""
        if kwargs:
            raise TypeError(
                f"query() got unexpected arguments: {', '.join(kwargs)}")
        seconds = _transport.ttl_seconds(ttl)
        if seconds is None:
            seconds = _CACHE_FOREVER_SECONDS
        if not _sql.returns_rows(sql):
            # Refused before it runs: a cached read is no place for a write.
            raise dbapi.ProgrammingError(
                "query() runs statements that return rows (SELECT, WITH, "
                "... RETURNING); use session() for others")
        cursor = self._dbapi.cursor()
        cursor.execute(sql, params, ttl=seconds or None)
        if chunksize is not None:
            return _closing_iter(
                _frames.frames(cursor, self._dbapi.flavor, chunksize,
                               index_col), cursor)
        try:
            return _frames.frame(cursor, self._dbapi.flavor, index_col)
        finally:
            cursor.close()

    @contextlib.contextmanager
    def session(self):
        """A transaction: commits when the block ends, rolls back when it
        raises. Statements in it run on one backend the daemon pins to it,
        uncached."""
        connection = dbapi.connect(self._name, **self._connect_args)
        session = Session(connection)
        try:
            # Begun up front, also on SQLite (where DB-API would wait for
            # the first write), so every statement of the block is in it.
            connection.begin()
            yield session
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    def reset(self):
        """Closes the connection's backends in the daemon and drops its
        cached results; the next call reconnects (Streamlit's reset())."""
        self._dbapi.reset()

    def close(self):
        self._dbapi.close()

    def __repr__(self):
        return f"<connbroker.SQLConnection {self._name!r} {self.description}>"


class Session:
    """The statements of one transaction (SQLConnection.session())."""

    def __init__(self, connection):
        self._connection = connection

    def execute(self, sql, params=None):
        """Runs a statement; the number of rows it changed (-1 if unknown)."""
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, params)
            if cursor.description is not None:
                cursor.fetchall()
            return cursor.rowcount
        finally:
            cursor.close()

    def query(self, sql, *, params=None, index_col=None):
        """A DataFrame of rows as this transaction sees them."""
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, params)
            return _frames.frame(cursor, self._connection.flavor, index_col)
        finally:
            cursor.close()

    def commit(self):
        self._connection.commit()

    def rollback(self):
        self._connection.rollback()

    @property
    def connection(self):
        """The DB-API connection the transaction runs on."""
        return self._connection


def _closing_iter(iterator, cursor):
    try:
        yield from iterator
    finally:
        cursor.close()
