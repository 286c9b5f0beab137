"""PEP 249 (DB-API 2.0) compliance of connbroker.dbapi against a real daemon
and real SQLite, PostgreSQL and MariaDB databases."""

import json
import os
import socket

import pytest

from conftest import Daemon, write_secrets
from connbroker import _sql, dbapi

# An auto-increment key column, per database.
AUTO_ID = {
    "sqlite": "id INTEGER PRIMARY KEY",
    "postgresql": "id SERIAL PRIMARY KEY",
    "mariadb": "id INT AUTO_INCREMENT PRIMARY KEY",
}


def series(backend, n):
    """SQL yielding i = 1..n in order, in one column named i."""
    if backend == "mariadb":  # max_recursive_iterations stops a CTE at 1000
        return f"SELECT seq AS i FROM seq_1_to_{n} ORDER BY seq"
    if backend == "postgresql":
        return f"SELECT i FROM generate_series(1, {n}) AS i ORDER BY i"
    return ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            f"WHERE i < {n}) SELECT i FROM n")


class Db:
    """A test's connections to one backend and its own table, all closed
    (connections first, so no open transaction holds the table) and dropped
    at teardown."""

    def __init__(self, daemon, backend, table):
        self.daemon = daemon
        self.backend = backend
        self.table = table
        self.opened = []

    def connect(self, autocommit=False, **kwargs):
        conn = dbapi.connect(self.backend, **kwargs)
        conn.autocommit = autocommit
        self.opened.append(conn)
        return conn

    def create(self, columns):
        self.connect(autocommit=True).cursor().execute(
            f"CREATE TABLE {self.table} ({columns})")

    def count(self, conn=None):
        """Rows in the table as another connection (autocommit) sees them."""
        conn = conn or self.connect(autocommit=True)
        return conn.cursor().execute(
            f"SELECT count(*) FROM {self.table}").fetchone()[0]

    def cli_count(self):
        """The same, seen by the C++ CLI process."""
        out = self.daemon.cli("query", self.backend,
                              f"SELECT count(*) AS n FROM {self.table}",
                              "--format", "json").stdout
        return json.loads(out)["rows"][0][0]

    def close(self):
        for conn in self.opened:
            conn.close()
        admin = dbapi.connect(self.backend)
        admin.autocommit = True
        admin.cursor().execute(f"DROP TABLE IF EXISTS {self.table}")
        admin.close()


@pytest.fixture
def db(daemon, backend, target, table_name):
    d = Db(daemon, backend, table_name)
    yield d
    d.close()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def special(tmp_path_factory):
    """A daemon with sections the shared one lacks: one with pool settings
    kwargs can override, one pointing at a closed port, and one whose url
    clients may replace."""
    directory = str(tmp_path_factory.mktemp("special"))
    extra = (
        f'\n[connections.tuned]\ntype = "sql"\n'
        f'url = "sqlite:///{directory}/tuned.db"\n'
        'create_engine_kwargs = { pool_size = 2, max_overflow = 0 }\n'
        f'\n[connections.down]\ntype = "sql"\n'
        f'url = "postgresql://u:p@127.0.0.1:{closed_port()}/db"\n'
        f'\n[connections.movable]\ntype = "sql"\n'
        f'url = "sqlite:///{directory}/movable.db"\n'
        'allow_client_kwargs = ["url"]\n')
    d = Daemon(directory, write_secrets(directory, {}, extra))
    yield d
    d.stop()


def listing(daemon, handle):
    out = json.loads(daemon.cli("connections", "--format", "json").stdout)
    return next(c for c in out["connections"] if c["handle"] == handle)


# --- module ----------------------------------------------------------------

def test_module_globals():
    assert dbapi.apilevel == "2.0"
    assert dbapi.threadsafety in (0, 1, 2, 3)
    assert dbapi.paramstyle in ("qmark", "named")


HIERARCHY = [
    ("Warning", Exception), ("Error", Exception),
    ("InterfaceError", "Error"), ("DatabaseError", "Error"),
    ("DataError", "DatabaseError"), ("OperationalError", "DatabaseError"),
    ("IntegrityError", "DatabaseError"), ("InternalError", "DatabaseError"),
    ("ProgrammingError", "DatabaseError"),
    ("NotSupportedError", "DatabaseError"),
]


@pytest.mark.parametrize("name,parent", HIERARCHY)
def test_exception_hierarchy(name, parent):
    cls = getattr(dbapi, name)
    parent = getattr(dbapi, parent) if isinstance(parent, str) else parent
    assert issubclass(cls, parent)
    # PEP 249's optional extension: the classes as Connection attributes.
    assert getattr(dbapi.Connection, name) is cls
    assert not issubclass(dbapi.Warning, dbapi.Error)


def test_type_objects_and_constructors():
    assert dbapi.STRING == "varchar" and dbapi.STRING != "int4"
    assert dbapi.NUMBER == "numeric" and dbapi.NUMBER != "text"
    assert dbapi.DATETIME == "timestamptz" and dbapi.DATETIME != "bytea"
    assert dbapi.BINARY == "bytea" and dbapi.BINARY != "float8"
    assert dbapi.Date(2024, 2, 29).isoformat() == "2024-02-29"
    assert dbapi.Timestamp(2024, 1, 2, 3, 4, 5).hour == 3
    assert dbapi.Binary(b"\x00") == b"\x00"


# --- connect ---------------------------------------------------------------

def test_connect_shares_one_handle(backend, target, daemon):
    a = dbapi.connect(backend)
    b = dbapi.connect(backend, target=target, type="sql")
    try:
        assert a.handle and a.handle == b.handle
        assert a.flavor == {"mariadb": "mysql"}.get(backend, backend)
        password = os.environ.get("CONNBROKER_TEST_PG_PASSWORD")
        if backend == "postgresql" and password:
            assert password not in a.description
    finally:
        a.close()
        b.close()


def test_connect_ttl_and_max_entries_reach_the_daemon(daemon, target):
    conn = dbapi.connect("sqlite", ttl="1h", max_entries=5)
    try:
        info = listing(daemon, conn.handle)
        assert info["ttl_seconds"] == 3600 and info["max_entries"] == 5
        # Other cache settings: another connection (Streamlit's caches).
        assert dbapi.connect("sqlite").handle != conn.handle
    finally:
        conn.close()


def test_connect_kwargs_override_the_secrets_section(special):
    plain = dbapi.connect("tuned", target=special.target)
    tuned = dbapi.connect("tuned", target=special.target,
                          create_engine_kwargs={"pool_size": 4})
    try:
        assert plain.handle != tuned.handle
        size_plain = listing(special, plain.handle)["pool"]["max_size"]
        size_tuned = listing(special, tuned.handle)["pool"]["max_size"]
        assert size_tuned - size_plain == 4 - 2
    finally:
        plain.close()
        tuned.close()


def test_connect_kwargs_cannot_redirect_a_section(target):
    with pytest.raises(dbapi.InterfaceError) as e:
        dbapi.connect("postgresql", url="sqlite:///tmp/elsewhere.db")
    assert "allow_client_kwargs" in str(e.value)
    assert e.value.reason == "CONFIG"


def test_connect_unknown_type_lists_known_types(target):
    with pytest.raises(dbapi.InterfaceError, match="known types:.*sql"):
        dbapi.connect("sqlite", type="nosuchtype")


# --- description and fetching -----------------------------------------------

# (column DDL, expected type code) per backend, and the type object.
DESCRIBED = {
    "sqlite": ["INTEGER", "TEXT", "REAL", "BLOB", "DATE"],
    "postgresql": [("integer", "int4"), ("varchar(9)", "varchar"),
                   ("double precision", "float8"), ("bytea", "bytea"),
                   ("timestamptz", "timestamptz")],
    "mariadb": [("int", "int"), ("varchar(9)", "varchar"),
                ("double", "double"), ("blob", "blob"),
                ("datetime", "datetime")],
}
TYPE_OBJECTS = ["NUMBER", "STRING", "NUMBER", "BINARY", "DATETIME"]


def test_description(db):
    columns = [c if isinstance(c, tuple) else (c, c)
               for c in DESCRIBED[db.backend]]
    names = ["c_int", "c_str", "c_float", "c_bin", "c_time"]
    db.create(", ".join(f"{n} {ddl}" for n, (ddl, _) in zip(names,
                                                             columns)))
    cur = db.connect().cursor()
    assert cur.description is None and cur.rowcount == -1
    cur.execute(f"SELECT * FROM {db.table}")
    assert len(cur.description) == 5
    for d, name, (_, code), obj in zip(cur.description, names, columns,
                                       TYPE_OBJECTS):
        assert len(d) == 7
        assert d[0] == name and d[1] == code
        assert getattr(dbapi, obj) == d[1]
        others = {"NUMBER", "STRING", "BINARY", "DATETIME"} - {obj}
        assert all(getattr(dbapi, o) != d[1] for o in others), d
    assert cur.fetchall() == []
    assert cur.rowcount == 0
    # A statement without a result: no description, fetch is an error.
    cur.execute(f"DELETE FROM {db.table}")
    assert cur.description is None
    with pytest.raises(dbapi.ProgrammingError):
        cur.fetchone()


def test_execute_executemany_and_fetches(db):
    db.create("n INTEGER, s VARCHAR(10)")
    conn = db.connect()
    cur = conn.cursor()
    rows = [(i, f"s{i}") for i in range(7)]
    cur.executemany(f"INSERT INTO {db.table} VALUES (?, ?)", rows)
    assert cur.rowcount == 7
    assert cur.execute(f"SELECT n, s FROM {db.table} ORDER BY n") is cur
    assert cur.fetchone() == rows[0]
    assert cur.fetchmany(2) == rows[1:3]
    cur.arraysize = 3
    assert cur.fetchmany() == rows[3:6]
    assert cur.fetchall() == rows[6:]
    assert cur.fetchone() is None
    assert cur.fetchmany(5) == [] and cur.fetchall() == []
    assert cur.rowcount == 7
    # Iteration, and rows are tuples.
    cur.execute(f"SELECT n, s FROM {db.table} ORDER BY n")
    assert list(cur) == rows
    assert all(type(r) is tuple for r in rows)


def test_rowcount_of_dml(db):
    db.create("n INTEGER")
    cur = db.connect().cursor()
    cur.executemany(f"INSERT INTO {db.table} VALUES (?)",
                    [(i,) for i in range(10)])
    cur.execute(f"UPDATE {db.table} SET n = n + 100 WHERE n < ?", (4,))
    assert cur.rowcount == 4
    cur.execute(f"DELETE FROM {db.table} WHERE n >= ?", (100,))
    assert cur.rowcount == 4
    cur.execute(f"DELETE FROM {db.table} WHERE n < 0")
    assert cur.rowcount == 0


def test_lastrowid(db):
    db.create(f"{AUTO_ID[db.backend]}, v VARCHAR(5)")
    cur = db.connect().cursor()
    ids = []
    for v in ("a", "b", "c"):
        cur.execute(f"INSERT INTO {db.table} (v) VALUES (?)", (v,))
        ids.append(cur.lastrowid)
    cur.execute(f"SELECT id FROM {db.table} ORDER BY id")
    stored = [r[0] for r in cur.fetchall()]
    if db.backend == "postgresql":
        # No rowid: PEP 249 says None (RETURNING gives the key).
        assert ids == [None] * 3
        cur.execute(f"INSERT INTO {db.table} (v) VALUES (?) RETURNING id",
                    ("d",))
        assert cur.fetchone()[0] == stored[-1] + 1
    else:
        assert ids == stored and len(set(ids)) == 3


def test_qmark_and_named_parameters(db):
    db.create("a INTEGER, b VARCHAR(20)")
    cur = db.connect().cursor()
    cur.execute(f"INSERT INTO {db.table} VALUES (?, ?)", (1, "it's ?"))
    cur.execute(f"INSERT INTO {db.table} VALUES (:a, :b)",
                {"a": 2, "b": ":b"})
    # A `?` (and a `:b`) inside a literal is text, not a placeholder.
    cur.execute(f"SELECT a, b, '?' AS q, ':b' AS n FROM {db.table} "
                "WHERE a >= ? ORDER BY a", [1])
    assert cur.fetchall() == [(1, "it's ?", "?", ":b"),
                              (2, ":b", "?", ":b")]
    cur.execute(f"SELECT b FROM {db.table} WHERE a = :a AND b <> '?'",
                {"a": 2})
    assert cur.fetchall() == [(":b",)]
    with pytest.raises(dbapi.ProgrammingError):
        cur.execute("SELECT ?", "not a sequence")


def test_qmark_rewrite_for_postgresql_skips_quotes_and_comments():
    sql = ("SELECT ?, '?''?', \"a?\", E'\\'?', $t$?$t$, $$?$$ -- ?\n"
           "/* ? /* ? */ ? */ , ?")
    rewritten, count = _sql.qmark_to_dollar(sql)
    assert count == 2
    assert rewritten == (
        "SELECT $1, '?''?', \"a?\", E'\\'?', $t$?$t$, $$?$$ -- ?\n"
        "/* ? /* ? */ ? */ , $2")


def test_fetchmany_streams_a_large_result(db):
    n, chunk = 200_000, 500
    conn = db.connect(autocommit=True)
    cur = conn.cursor()
    cur.execute(series(db.backend, n), chunk_rows=chunk)
    first = cur.fetchmany(10)
    assert [r[0] for r in first] == list(range(1, 11))
    # One batch held, the rest not yet received: no summary, no rowcount.
    assert len(cur._rows) <= chunk - 10
    assert cur._reader is not None and cur._reader.summary is None
    assert cur.rowcount == -1
    expected = 11
    while True:
        rows = cur.fetchmany(997)
        if not rows:
            break
        assert len(cur._rows) <= chunk
        assert [r[0] for r in rows] == list(range(expected,
                                                  expected + len(rows)))
        expected += len(rows)
    assert expected == n + 1
    assert cur.rowcount == n


def test_abandoned_stream_leaves_the_connection_usable(db):
    conn = db.connect(autocommit=True)
    cur = conn.cursor()
    cur.execute(series(db.backend, 100_000), chunk_rows=100)
    assert cur.fetchmany(3) == [(1,), (2,), (3,)]
    # Re-executing drops (cancels) the rest of the result.
    cur.execute("SELECT 7")
    assert cur.fetchall() == [(7,)]
    cur.execute(series(db.backend, 100_000), chunk_rows=100)
    cur.fetchone()
    cur.close()
    assert conn.cursor().execute("SELECT 8").fetchall() == [(8,)]


# --- transactions ------------------------------------------------------------

def test_rollback_undoes_an_insert(db):
    db.create("n INTEGER")
    conn = db.connect()
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {db.table} VALUES (1)")
    assert conn.in_transaction
    assert db.count(conn) == 1  # its own write
    conn.rollback()
    assert not conn.in_transaction
    assert db.count() == 0 and db.cli_count() == 0
    assert db.count(conn) == 0


def test_commit_makes_it_visible_to_others(db):
    db.create("n INTEGER")
    conn = db.connect()
    conn.cursor().execute(f"INSERT INTO {db.table} VALUES (1)")
    assert db.count() == 0 and db.cli_count() == 0
    conn.commit()
    assert db.count() == 1 and db.cli_count() == 1


def test_a_select_opens_a_transaction_except_on_sqlite(db):
    conn = db.connect()
    conn.cursor().execute("SELECT 1").fetchall()
    # sqlite3's rule (readers take no lock) vs psycopg2 / mysqlclient.
    assert conn.in_transaction == (db.backend != "sqlite")
    conn.rollback()
    assert not conn.in_transaction


def test_autocommit(db):
    db.create("n INTEGER")
    conn = db.connect(autocommit=True)
    conn.cursor().execute(f"INSERT INTO {db.table} VALUES (1)")
    assert not conn.in_transaction
    conn.rollback()  # nothing to undo
    assert db.count() == 1 and db.cli_count() == 1
    # Turning it off: the next write opens a transaction again.
    conn.autocommit = False
    conn.cursor().execute(f"INSERT INTO {db.table} VALUES (2)")
    assert conn.in_transaction
    with pytest.raises(dbapi.ProgrammingError):
        conn.autocommit = True
    conn.rollback()
    assert db.count() == 1


def test_connection_context_manager(db):
    db.create("n INTEGER")
    conn = db.connect()
    with conn:
        conn.cursor().execute(f"INSERT INTO {db.table} VALUES (1)")
    assert db.count() == 1
    with pytest.raises(KeyError):
        with conn:
            conn.cursor().execute(f"INSERT INTO {db.table} VALUES (2)")
            raise KeyError("boom")
    assert not conn.closed and not conn.in_transaction
    assert db.count() == 1 and db.cli_count() == 1


def test_close_inside_a_transaction_rolls_back(db):
    db.create("n INTEGER PRIMARY KEY")
    conn = db.connect()
    conn.cursor().execute(f"INSERT INTO {db.table} VALUES (1)")
    conn.close()
    # Rolled back, and its locks are gone: the same key goes in at once.
    other = db.connect()
    other.cursor().execute(f"INSERT INTO {db.table} VALUES (1)")
    other.commit()
    assert db.count() == 1


def test_cursor_of_a_closed_connection(db):
    conn = db.connect()
    cur = conn.cursor()
    conn.close()
    conn.close()  # a second close is harmless
    for call in (lambda: cur.execute("SELECT 1"), conn.commit,
                 conn.rollback, lambda: conn.cursor().execute("SELECT 1"),
                 conn.cursor):
        with pytest.raises(dbapi.InterfaceError):
            call()


def test_closed_cursor(db):
    cur = db.connect().cursor()
    cur.execute("SELECT 1")
    cur.close()
    for call in (lambda: cur.execute("SELECT 1"), cur.fetchone,
                 cur.fetchall, lambda: cur.fetchmany(2)):
        with pytest.raises(dbapi.InterfaceError):
            call()


# --- errors ------------------------------------------------------------------

SQLSTATES = {
    # backend: (syntax error, unknown table, duplicate key)
    # SQLite has none; the daemon gives its constraint errors PostgreSQL's.
    "sqlite": ("", "", "23505"),
    "postgresql": ("42601", "42P01", "23505"),
    "mariadb": ("42000", "42S02", "23000"),
}


def test_programming_error(db):
    cur = db.connect().cursor()
    with pytest.raises(dbapi.ProgrammingError) as e:
        cur.execute("SELEC 1")
    assert "syntax" in str(e.value) and "SELEC" in str(e.value)
    assert e.value.sqlstate == SQLSTATES[db.backend][0]
    cur = db.connect().cursor()
    with pytest.raises(dbapi.ProgrammingError) as e:
        cur.execute(f"SELECT * FROM {db.table}")
    assert db.table in str(e.value)
    assert e.value.sqlstate == SQLSTATES[db.backend][1]


def test_integrity_error(db):
    db.create("n INTEGER PRIMARY KEY")
    conn = db.connect(autocommit=True)
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {db.table} VALUES (1)")
    with pytest.raises(dbapi.IntegrityError) as e:
        cur.execute(f"INSERT INTO {db.table} VALUES (?)", (1,))
    assert e.value.sqlstate == SQLSTATES[db.backend][2]
    assert db.count() == 1


DATA_ERRORS = {
    # SQLite stores any value in any column: only a too-big value errs.
    "sqlite": [("SELECT zeroblob(2000000000)", "22001")],
    "postgresql": [("SELECT 1 / 0", "22012"),
                   ("SELECT CAST('abc' AS integer)", "22P02"),
                   ("INSERT INTO {t} VALUES ('toolong')", "22001")],
    # Division by zero is NULL on MariaDB; strict mode refuses the rest.
    "mariadb": [("INSERT INTO {t} VALUES ('toolong')", "22001"),
                ("INSERT INTO {t} VALUES (CAST('2024-13-45' AS DATE))",
                 "22007")],
}


def test_data_error(db):
    db.create("s VARCHAR(3)")
    cur = db.connect(autocommit=True).cursor()
    for sql, sqlstate in DATA_ERRORS[db.backend]:
        with pytest.raises(dbapi.DataError) as e:
            cur.execute(sql.format(t=db.table)).fetchall()
        assert e.value.sqlstate == sqlstate, sql


def test_interface_error_for_an_unknown_name(daemon, target):
    with pytest.raises(dbapi.InterfaceError) as e:
        dbapi.connect("no_such_connection")
    message = str(e.value)
    assert "no_such_connection" in message
    for name in daemon.urls:
        assert name in message


def test_operational_error_when_the_daemon_is_unreachable(tmp_path):
    with pytest.raises(dbapi.OperationalError) as e:
        dbapi.connect("sqlite", target=f"unix:{tmp_path}/nothing.sock")
    assert e.value.code.name == "UNAVAILABLE"


def test_operational_error_when_the_backend_is_unreachable(special):
    # The daemon opens a first backend at Connect (or at the first
    # statement): either one fails.
    with pytest.raises(dbapi.OperationalError) as e:
        dbapi.connect("down", target=special.target).cursor().execute(
            "SELECT 1")
    assert e.value.reason == "BACKEND" and e.value.retryable
    assert "Connection refused" in str(e.value)
    # The same through a url kwarg the section lets clients set.
    port = closed_port()
    with pytest.raises(dbapi.OperationalError, match=f"port {port}"):
        dbapi.connect("movable", target=special.target,
                      url=f"postgresql://u:p@127.0.0.1:{port}/db").cursor(
                          ).execute("SELECT 1")


def test_deferrable_where_the_database_has_none(db):
    conn = db.connect()
    if db.backend == "postgresql":
        conn.begin(isolation=4, read_only=True, deferrable=True)
        assert conn.in_transaction
        conn.rollback()
        return
    # The daemon refuses it as INVALID_ARGUMENT without a SQLSTATE, which
    # the client maps by code: a ProgrammingError (not NotSupportedError).
    with pytest.raises(dbapi.ProgrammingError, match="deferrable") as e:
        conn.begin(deferrable=True)
    assert e.value.code.name == "INVALID_ARGUMENT"
    assert not conn.in_transaction


def test_not_supported_error_from_sqlstate_0a(daemon, target, table_name):
    if "postgresql" not in daemon.urls:
        pytest.skip("no postgresql server")
    conn = dbapi.connect("postgresql")
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE TEMP TABLE {table_name} (n int)")
        with pytest.raises(dbapi.NotSupportedError) as e:
            cur.execute(f"SELECT count(*) FROM {table_name} FOR UPDATE")
        assert e.value.sqlstate == "0A000"
    finally:
        conn.close()


def test_internal_error_after_a_failed_statement_in_a_transaction(
        daemon, target):
    if "postgresql" not in daemon.urls:
        pytest.skip("no postgresql server")
    conn = dbapi.connect("postgresql")
    try:
        cur = conn.cursor()
        with pytest.raises(dbapi.ProgrammingError):
            cur.execute("SELECT * FROM no_such_table_here")
        assert conn.in_transaction
        with pytest.raises(dbapi.InternalError) as e:
            cur.execute("SELECT 1")
        assert e.value.sqlstate == "25P02"
        conn.rollback()
        assert cur.execute("SELECT 1").fetchall() == [(1,)]
    finally:
        conn.close()


# --- result cache ------------------------------------------------------------

def test_result_cache(db):
    db.create("n INTEGER")
    conn = db.connect()
    cur = conn.cursor()
    sql = f"SELECT count(*) FROM {db.table}"
    assert cur.execute(sql, ttl=60).fetchall() == [(0,)]
    assert not cur.from_cache
    db.connect(autocommit=True).cursor().execute(
        f"INSERT INTO {db.table} VALUES (1)")
    # The cached answer, not the table's current one.
    assert cur.execute(sql, ttl=60).fetchall() == [(0,)]
    assert cur.from_cache
    assert cur.execute(sql).fetchall() == [(1,)]
    assert not cur.from_cache
