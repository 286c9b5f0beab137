"""SQLAlchemy through the daemon: the `connbroker` driver of the sqlite,
postgresql, mysql and mariadb dialects (client/python/connbroker/
sqlalchemy.py), against the module's real connbrokerd and databases."""

import datetime
import decimal
import re

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import exc

import connbroker.sqlalchemy as cb_sqlalchemy  # registers the dialects
from connbroker import dbapi

# Backend label (the daemon's connection name) -> URL scheme.
SCHEMES = {
    "sqlite": "sqlite+connbroker",
    "postgresql": "postgresql+connbroker",
    "mariadb": "mariadb+connbroker",
}


@pytest.fixture
def engine(backend, target):
    """An engine on the backend's connection, the daemon found through
    $CONNBROKER_TARGET (the target fixture sets it)."""
    eng = sa.create_engine(f"{SCHEMES[backend]}:///{backend}")
    yield eng
    eng.dispose()


@pytest.fixture
def drop(engine, table_name):
    """Drops the test's table afterwards, whatever the test left."""
    yield
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table_name}"))


def _count(engine, table_name):
    with engine.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT COUNT(*) FROM {table_name}")).scalar()


def _make_table(engine, table_name):
    with engine.begin() as conn:
        conn.execute(sa.text(
            f"CREATE TABLE {table_name} (id INTEGER PRIMARY KEY, "
            "name VARCHAR(40))"))


# --- Registration and URLs (no database needed) ----------------------------

@pytest.mark.parametrize("scheme,cls,name", [
    ("sqlite", cb_sqlalchemy.SQLiteDialect_connbroker, "sqlite"),
    ("postgresql", cb_sqlalchemy.PGDialect_connbroker, "postgresql"),
    ("mysql", cb_sqlalchemy.MySQLDialect_connbroker, "mysql"),
    ("mariadb", cb_sqlalchemy.MariaDBDialect_connbroker, "mariadb"),
])
def test_each_scheme_loads_its_dialect(scheme, cls, name):
    eng = sa.create_engine(f"{scheme}+connbroker:///whatever")
    dialect = eng.dialect
    assert type(dialect) is cls
    assert (dialect.name, dialect.driver) == (name, "connbroker")
    assert dialect.dbapi is dbapi
    assert dialect.paramstyle == ("qmark" if name == "sqlite" else "named")
    assert dialect.supports_statement_cache is True
    if name == "mariadb":
        assert dialect.is_mariadb


def test_sql_compiles_for_the_real_backend():
    stmt = sa.select(sa.literal_column("x")).limit(3)
    compiled = {
        scheme: str(stmt.compile(
            dialect=sa.create_engine(f"{scheme}+connbroker:///n").dialect))
        for scheme in ("sqlite", "postgresql", "mariadb")
    }
    assert "LIMIT ?" in compiled["sqlite"]
    assert "LIMIT :param_1" in compiled["postgresql"]
    assert "LIMIT :param_1" in compiled["mariadb"]
    # Identifier quoting is each database's own.
    table = sa.table("order")
    pg = sa.create_engine("postgresql+connbroker:///n").dialect
    my = sa.create_engine("mysql+connbroker:///n").dialect
    assert '"order"' in str(sa.select(sa.text("1")).select_from(table)
                            .compile(dialect=pg))
    assert "`order`" in str(sa.select(sa.text("1")).select_from(table)
                            .compile(dialect=my))


def test_url_query_becomes_connect_arguments():
    url = sa.engine.make_url(
        "postgresql+connbroker:///analytics?target=unix:/tmp/b.sock"
        "&type=sql&ttl=30&max_entries=4&sslmode=require&application_name=x")
    dialect = sa.create_engine(url).dialect
    args, kwargs = dialect.create_connect_args(url)
    assert args == ["analytics"]
    assert kwargs == {"target": "unix:/tmp/b.sock", "type": "sql",
                      "ttl": 30.0, "max_entries": 4, "sslmode": "require",
                      "application_name": "x"}
    # Streamlit's duration text stays text; dbapi parses it.
    url = sa.engine.make_url("sqlite+connbroker:///n?ttl=1h")
    assert dialect.create_connect_args(url)[1] == {"ttl": "1h"}


@pytest.mark.parametrize("url", [
    "postgresql+connbroker://bob:secret@db.example/analytics",
    "mysql+connbroker://db.example:3306/analytics",
    "sqlite+connbroker://bob@/analytics",
])
def test_credentials_in_the_url_are_refused(url):
    with pytest.raises(exc.ArgumentError, match="secrets file"):
        sa.create_engine(url).dialect.create_connect_args(
            sa.engine.make_url(url))


def test_a_url_without_a_name_is_refused():
    with pytest.raises(exc.ArgumentError, match="no connection name"):
        eng = sa.create_engine("postgresql+connbroker://")
        eng.dialect.create_connect_args(eng.url)


# --- Against the databases ------------------------------------------------

def test_target_from_the_url(daemon, monkeypatch):
    monkeypatch.delenv("CONNBROKER_TARGET", raising=False)
    eng = sa.create_engine(
        f"sqlite+connbroker:///sqlite?target={daemon.target}")
    try:
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT 40 + 2")).scalar() == 42
            assert conn.connection.dbapi_connection.target == daemon.target
    finally:
        eng.dispose()


def test_server_version_and_default_schema(engine, backend):
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        cur = raw.cursor()
        if backend == "sqlite":
            cur.execute("SELECT sqlite_version()")
            schema = "main"
        elif backend == "postgresql":
            cur.execute("SHOW server_version")
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        else:
            cur.execute("SELECT VERSION()")
            schema = conn.execute(sa.text("SELECT DATABASE()")).scalar()
        version = cur.fetchone()[0]
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    assert engine.dialect.server_version_info[:2] == numbers
    assert engine.dialect.default_schema_name == schema
    if backend == "mariadb":
        assert "MariaDB" in version and engine.dialect.is_mariadb


def test_read_sql_with_named_parameters(engine, table_name, drop):
    _make_table(engine, table_name)
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table_name} VALUES (:i, :n)"),
                     [{"i": i, "n": f"n{i}"} for i in range(1, 6)])
    frame = pd.read_sql(
        sa.text(f"SELECT id, name FROM {table_name} WHERE id >= :low "
                "AND name <> :skip ORDER BY id"),
        engine, params={"low": 2, "skip": "n4"})
    assert frame["id"].tolist() == [2, 3, 5]
    assert frame["name"].tolist() == ["n2", "n3", "n5"]


def test_begin_commits_and_rolls_back_on_error(engine, table_name, drop):
    _make_table(engine, table_name)
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table_name} VALUES (1, 'a')"))
    assert _count(engine, table_name) == 1

    with pytest.raises(ZeroDivisionError):
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {table_name} VALUES (2, 'b')"))
            # Seen inside the transaction ...
            assert conn.execute(sa.text(
                f"SELECT COUNT(*) FROM {table_name}")).scalar() == 2
            1 / 0
    # ... and gone after the rollback.
    assert _count(engine, table_name) == 1


def test_a_failed_statement_rolls_back_the_transaction(engine, backend,
                                                       table_name, drop):
    _make_table(engine, table_name)
    with pytest.raises(exc.DBAPIError) as caught:
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {table_name} VALUES (1, 'a')"))
            conn.execute(sa.text(f"INSERT INTO {table_name} VALUES (1, 'b')"))
    assert _count(engine, table_name) == 0
    # The daemon sends no SQLSTATE for SQLite's errors, so a constraint
    # failure there is not told apart from bad SQL (yet).
    if backend != "sqlite":
        assert isinstance(caught.value, exc.IntegrityError)


def _typed_table(metadata, table_name):
    return sa.Table(
        table_name, metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("label", sa.String(30)),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("ratio", sa.Float),
        sa.Column("at", sa.DateTime),
        sa.Column("day", sa.Date),
        sa.Column("clock", sa.Time),
        sa.Column("flag", sa.Boolean),
        sa.Column("doc", sa.JSON),
        sa.Column("payload", sa.LargeBinary),
    )


ROW = {
    "label": "première",
    "amount": decimal.Decimal("12345678.91"),
    "ratio": 0.625,
    "at": datetime.datetime(2024, 2, 29, 23, 59, 58),
    "day": datetime.date(1999, 12, 31),
    "clock": datetime.time(13, 14, 15),
    "flag": True,
    "doc": {"a": [1, 2, None], "b": "ü"},
    "payload": b"\x00\x01\xfe\xff",
}


# SQLite stores Numeric as REAL; SQLAlchemy says so, as with sqlite3.
@pytest.mark.filterwarnings("ignore:Dialect sqlite.*Decimal")
def test_core_insert_and_select_round_trip_types(engine, table_name, drop):
    metadata = sa.MetaData()
    table = _typed_table(metadata, table_name)
    metadata.create_all(engine)
    with engine.begin() as conn:
        first = conn.execute(table.insert().values(**ROW))
        second = conn.execute(table.insert().values(
            label="nulls", flag=False))
    assert first.inserted_primary_key[0] != second.inserted_primary_key[0]

    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(table).order_by(table.c.id)).mappings().all()
    assert len(rows) == 2
    got = rows[0]
    assert got["id"] == first.inserted_primary_key[0]
    for key, value in ROW.items():
        assert got[key] == value, key
        assert type(got[key]) is type(value), key
    assert rows[1]["flag"] is False
    assert all(rows[1][key] is None for key in ROW
               if key not in ("label", "flag"))

    # Filtering binds each type the way the backend compares it.
    with engine.connect() as conn:
        found = conn.execute(sa.select(table.c.label).where(
            table.c.amount == ROW["amount"],
            table.c.at == ROW["at"], table.c.day == ROW["day"],
            table.c.flag.is_(True))).scalars().all()
    assert found == [ROW["label"]]


@pytest.mark.filterwarnings("ignore:Dialect sqlite.*Decimal")
def test_numeric_results_follow_asdecimal(engine, backend, table_name,
                                          drop):
    metadata = sa.MetaData()
    table = _typed_table(metadata, table_name)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert().values(amount=decimal.Decimal("2.50"),
                                           ratio=0.25))
    query = sa.text(f"SELECT amount, ratio FROM {table_name}").columns(
        amount=sa.Numeric(10, 2, asdecimal=False),
        ratio=sa.Float(asdecimal=True))
    with engine.connect() as conn:
        amount, ratio = conn.execute(query).one()
    assert type(amount) is float and amount == 2.5
    assert isinstance(ratio, decimal.Decimal) and ratio == \
        decimal.Decimal("0.25")
    if backend == "postgresql":
        # As psycopg2's dialect does by type OID: a Numeric over a float8
        # column still gives Decimal, found by the type name here.
        query = sa.text(f"SELECT ratio FROM {table_name}").columns(
            ratio=sa.Numeric())
        with engine.connect() as conn:
            ratio = conn.execute(query).scalar()
        assert isinstance(ratio, decimal.Decimal) and ratio == \
            decimal.Decimal("0.25")


def test_inspector_tables_and_columns(engine, table_name, drop):
    metadata = sa.MetaData()
    _typed_table(metadata, table_name)
    metadata.create_all(engine)
    inspector = sa.inspect(engine)
    assert table_name in inspector.get_table_names()
    assert inspector.has_table(table_name)
    columns = {c["name"]: c for c in inspector.get_columns(table_name)}
    assert list(columns) == ["id", "label", "amount", "ratio", "at", "day",
                             "clock", "flag", "doc", "payload"]
    assert columns["label"]["type"].length == 30
    assert isinstance(columns["id"]["type"], sa.Integer)
    assert isinstance(columns["amount"]["type"], sa.Numeric)
    assert (columns["amount"]["type"].precision,
            columns["amount"]["type"].scale) == (10, 2)
    assert isinstance(columns["at"]["type"], sa.DateTime)
    assert columns["id"]["nullable"] is False
    assert columns["label"]["nullable"] is True
    assert inspector.get_pk_constraint(table_name)["constrained_columns"] \
        == ["id"]

    # Reflection builds a Table that reads the same rows back.
    with engine.begin() as conn:
        conn.execute(sa.text(
            f"INSERT INTO {table_name} (id, label) VALUES (7, 'seven')"))
    reflected = sa.Table(table_name, sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(reflected.c.label).where(
            reflected.c.id == 7)).scalar_one() == "seven"


def test_reflecting_a_missing_table_raises(engine, table_name):
    with pytest.raises(exc.NoSuchTableError):
        sa.Table(table_name, sa.MetaData(), autoload_with=engine)
    assert not sa.inspect(engine).has_table(table_name)


def test_dataframe_to_sql_and_back(engine, table_name, drop):
    frame = pd.DataFrame({
        "k": [3, 1, 2],
        "x": [0.5, -1.25, 1e10],
        "s": ["c", None, "bé"],
        "when": pd.to_datetime(["2024-01-01 10:00:00",
                                "2023-06-30 00:00:01",
                                "2000-02-29 12:30:00"]),
    })
    written = frame.to_sql(table_name, engine, index=False)
    assert written in (None, 3)  # pandas reports rows where it can
    back = pd.read_sql(sa.text(f"SELECT * FROM {table_name} ORDER BY k"),
                       engine, parse_dates=["when"])
    expected = frame.sort_values("k").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert back["k"].dtype.kind == "i"

    # if_exists="append" goes through has_table and the same insert.
    frame.to_sql(table_name, engine, index=False, if_exists="append")
    assert _count(engine, table_name) == 6


def test_autocommit_isolation_level(engine, table_name, drop):
    _make_table(engine, table_name)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        assert conn.get_isolation_level() == "AUTOCOMMIT"
        raw = conn.connection.dbapi_connection
        assert raw.autocommit is True
        conn.execute(sa.text(f"INSERT INTO {table_name} VALUES (1, 'a')"))
        assert not raw.in_transaction
        # Committed already: another connection sees it at once.
        assert _count(engine, table_name) == 1
    finally:
        conn.close()
    # Back in the pool, the connection lost the level.
    with engine.connect() as again:
        assert again.connection.dbapi_connection.autocommit is False
        assert again.get_isolation_level() == \
            engine.dialect.default_isolation_level


def test_default_isolation_level_is_the_databases(engine, backend):
    if backend == "sqlite":
        with engine.connect() as conn:
            assert conn.get_isolation_level() == "SERIALIZABLE"
        assert engine.dialect.default_isolation_level == "SERIALIZABLE"
        return
    raw = dbapi.connect(backend)
    try:
        cur = raw.cursor()
        cur.execute("SHOW transaction_isolation" if backend == "postgresql"
                    else "SELECT @@tx_isolation")
        expected = cur.fetchone()[0].upper().replace("-", " ")
    finally:
        raw.close()
    with engine.connect() as conn:
        assert conn.get_isolation_level() == expected
    assert engine.dialect.default_isolation_level == expected


def test_postgresql_serializable_transaction(target, daemon):
    if "postgresql" not in daemon.urls:
        pytest.skip("no postgresql server")
    eng = sa.create_engine("postgresql+connbroker:///postgresql")
    try:
        with eng.connect().execution_options(
                isolation_level="SERIALIZABLE") as conn:
            with conn.begin():
                level = conn.execute(sa.text(
                    "SHOW transaction_isolation")).scalar()
        assert level == "serializable"
        with eng.connect() as conn:
            with conn.begin():
                level = conn.execute(sa.text(
                    "SHOW transaction_isolation")).scalar()
        assert level == "read committed"
        with pytest.raises(exc.ArgumentError, match="isolation"):
            with eng.connect().execution_options(
                    isolation_level="SOMETIMES") as conn:
                conn.execute(sa.text("SELECT 1"))
    finally:
        eng.dispose()


def test_pre_ping_opens_no_transaction(backend, target):
    eng = sa.create_engine(f"{SCHEMES[backend]}:///{backend}",
                           pool_pre_ping=True)
    try:
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            raw = conn.connection.dbapi_connection
        # Back in the pool (rolled back there), as the pool pings it.
        assert not raw.in_transaction
        assert eng.dialect.do_ping(raw) is True
        assert not raw.in_transaction and raw.autocommit is False
        with eng.connect() as conn:  # pinged on checkout
            assert conn.connection.dbapi_connection is raw
            assert conn.execute(sa.text("SELECT 2")).scalar() == 2
    finally:
        eng.dispose()


def test_disconnects_are_recognised(engine):
    closed = dbapi.InterfaceError("the connection is closed")
    gone = dbapi.OperationalError("daemon gone", code=type(
        "Code", (), {"name": "UNAVAILABLE"})())
    sql = dbapi.ProgrammingError("syntax error", sqlstate="42601")
    assert engine.dialect.is_disconnect(closed, None, None)
    assert engine.dialect.is_disconnect(gone, None, None)
    assert not engine.dialect.is_disconnect(sql, None, None)


def test_mysql_scheme_on_mariadb(target, daemon, table_name):
    if "mariadb" not in daemon.urls:
        pytest.skip("no mariadb server")
    eng = sa.create_engine("mysql+connbroker:///mariadb")
    try:
        with eng.connect() as conn:
            version = conn.execute(sa.text("SELECT VERSION()")).scalar()
        assert eng.dialect.name == "mysql"
        # SQLAlchemy recognises the server as MariaDB from its version.
        assert eng.dialect.is_mariadb == ("MariaDB" in version)
        metadata = sa.MetaData()
        table = sa.Table(table_name, metadata,
                         sa.Column("id", sa.Integer, primary_key=True),
                         sa.Column("d", sa.Time))
        metadata.create_all(eng)
        with eng.begin() as conn:
            conn.execute(table.insert(), [
                {"id": 1, "d": datetime.time(2, 0, 5)}])
        with eng.connect() as conn:
            # The driver gives MySQL's TIME as a duration, as mysqlclient;
            # the dialect's Time turns it into a time of day.
            raw = conn.exec_driver_sql(f"SELECT d FROM {table_name}")
            assert raw.scalar() == datetime.timedelta(hours=2, seconds=5)
            assert conn.execute(sa.select(table.c.d)).scalar() == \
                datetime.time(2, 0, 5)
        assert [c["name"] for c in sa.inspect(eng).get_columns(
            table_name)] == ["id", "d"]
        metadata.drop_all(eng)
        assert not sa.inspect(eng).has_table(table_name)
    finally:
        eng.dispose()


def test_mysql_error_numbers_reach_the_dialect(daemon, target):
    # SQLAlchemy's MySQL dialect decides on error numbers (reflection's
    # 1146, is_disconnect's lost-connection ones); the daemon's message
    # carries them.
    if "mariadb" not in daemon.urls:
        pytest.skip("no mariadb server")
    eng = sa.create_engine("mariadb+connbroker:///mariadb")
    try:
        with pytest.raises(exc.ProgrammingError) as raised:
            with eng.connect() as conn:
                conn.execute(sa.text("SELEC 1"))
        assert eng.dialect._extract_error_code(raised.value.orig) == 1064
        with pytest.raises(exc.ProgrammingError) as raised:
            with eng.connect() as conn:
                conn.execute(sa.text("SELECT * FROM no_such_table_here"))
        assert eng.dialect._extract_error_code(raised.value.orig) == 1146
    finally:
        eng.dispose()
