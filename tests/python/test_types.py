"""Values and Python types of every column type of SQLite, PostgreSQL and
MariaDB through connbroker.dbapi, and the column decoding beneath it."""

import datetime
import random
from decimal import Decimal

import pytest

from connbroker import _columns, dbapi
from connbroker.v1 import values_pb2

I64_MIN, I64_MAX = -2**63, 2**63 - 1
UTC = datetime.timezone.utc
D = datetime.date
T = datetime.time
DT = datetime.datetime
TD = datetime.timedelta

# (column type, SQL literal, the Python value expected back)
CASES = {
    "sqlite": [
        ("INTEGER", str(I64_MIN), I64_MIN),
        ("INTEGER", str(I64_MAX), I64_MAX),
        ("INTEGER", "-1", -1),
        ("INTEGER", "300", 300),
        ("REAL", "1.5", 1.5),
        ("REAL", "-2.25e300", -2.25e300),
        ("TEXT", "'héllo ✓'", "héllo ✓"),
        ("TEXT", "''", ""),
        ("BLOB", "x'00ff'", b"\x00\xff"),
        ("BLOB", "x''", b""),
        # NUMERIC affinity: numbers where the text is one, else the text.
        ("NUMERIC", "'12.50'", 12.5),
        ("NUMERIC", "'7'", 7),
        ("NUMERIC", "'abc'", "abc"),
        ("", "'untyped'", "untyped"),
        # Values stay as stored (as the sqlite3 module gives them).
        ("DATE", "'2024-02-29'", "2024-02-29"),
    ],
    "postgresql": [
        ("smallint", "-32768", -32768),
        ("integer", "2147483647", 2147483647),
        ("bigint", str(I64_MIN), I64_MIN),
        ("bigint", str(I64_MAX), I64_MAX),
        ("real", "1.5", 1.5),
        ("double precision", "-2.25e300", -2.25e300),
        ("numeric(12,3)", "-1234567.125", Decimal("-1234567.125")),
        ("numeric", "12345678901234567890.123456789",
         Decimal("12345678901234567890.123456789")),
        ("boolean", "true", True),
        ("boolean", "false", False),
        ("text", "'héllo ✓'", "héllo ✓"),
        ("varchar(5)", "'ab'", "ab"),
        ("char(4)", "'x'", "x   "),
        ("bytea", "'\\x00ff'", b"\x00\xff"),
        ("date", "'2024-02-29'", D(2024, 2, 29)),
        ("time", "'13:14:15.123456'", T(13, 14, 15, 123456)),
        ("timetz", "'13:14:15+02'",
         T(13, 14, 15, tzinfo=datetime.timezone(TD(hours=2)))),
        ("timestamp", "'2024-01-02 03:04:05.678'",
         DT(2024, 1, 2, 3, 4, 5, 678000)),
        ("timestamptz", "'2024-01-02 03:04:05+00'",
         DT(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("interval", "'1 day 02:03:04'", TD(days=1, hours=2, minutes=3,
                                             seconds=4)),
        ("interval", "'1 year 2 mons -3 days +04:05:06.5'",
         TD(days=365 + 2 * 30 - 3, hours=4, minutes=5, seconds=6.5)),
        ("interval", "'-1 days -00:00:01.5'", TD(days=-1, seconds=-1.5)),
        ("uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
         "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ("json", "'{\"a\": [1, 2]}'", '{"a": [1, 2]}'),
        ("jsonb", "'{\"b\": null}'", '{"b": null}'),
    ],
    "mariadb": [
        ("tinyint", "-128", -128),
        ("smallint", "-32768", -32768),
        ("int", "2147483647", 2147483647),
        ("bigint", str(I64_MIN), I64_MIN),
        ("bigint", str(I64_MAX), I64_MAX),
        ("bigint unsigned", str(2**64 - 1), 2**64 - 1),
        ("float", "1.5", 1.5),
        ("double", "-2.25e300", -2.25e300),
        ("decimal(20,4)", "-12345678.1234", Decimal("-12345678.1234")),
        ("bit(8)", "b'10100101'", b"\xa5"),
        ("char(4)", "'ab'", "ab"),
        ("varchar(10)", "'héllo ✓'", "héllo ✓"),
        ("text", "'txt'", "txt"),
        ("blob", "x'00ff'", b"\x00\xff"),
        ("binary(3)", "'ab'", b"ab\x00"),
        ("date", "'2024-02-29'", D(2024, 2, 29)),
        ("time", "'-838:59:59'", -TD(hours=838, minutes=59, seconds=59)),
        ("time(3)", "'12:00:00.5'", TD(hours=12, milliseconds=500)),
        ("datetime(6)", "'2024-01-02 03:04:05.678901'",
         DT(2024, 1, 2, 3, 4, 5, 678901)),
        ("timestamp NULL", "'2024-01-02 03:04:05'", DT(2024, 1, 2, 3, 4, 5)),
        ("year", "2024", 2024),
        ("enum('x','y')", "'y'", "y"),
        ("set('a','b','c')", "'a,c'", "a,c"),
        ("json", "'{\"a\": [1, 2]}'", '{"a": [1, 2]}'),
    ],
}


def same(got, expected):
    """Equal, of the same type, and for times of the same zone."""
    if type(got) is not type(expected) or got != expected:
        return False
    if isinstance(expected, (DT, T)):
        return got.utcoffset() == expected.utcoffset()
    return True


@pytest.fixture
def conn(backend, target, table_name):
    c = dbapi.connect(backend)
    c.autocommit = True
    yield c
    c.cursor().execute(f"DROP TABLE IF EXISTS {table_name}")
    c.close()


def test_values_and_types(backend, conn, table_name):
    cases = CASES[backend]
    columns = ", ".join(f"c{i} {ddl}" for i, (ddl, _, _) in enumerate(cases))
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} (k INTEGER, {columns})")
    literals = ", ".join(literal for _, literal, _ in cases)
    cur.execute(f"INSERT INTO {table_name} VALUES (1, {literals})")
    cur.execute(f"INSERT INTO {table_name} (k) VALUES (2)")
    cur.execute(f"SELECT * FROM {table_name} ORDER BY k")
    values, nulls = cur.fetchall()
    wrong = [(ddl, literal, got, expected)
             for (ddl, literal, expected), got in zip(cases, values[1:])
             if not same(got, expected)]
    assert not wrong, "\n".join(
        f"{ddl} {literal}: got {got!r}, expected {expected!r}"
        for ddl, literal, got, expected in wrong)
    assert nulls == (2,) + (None,) * len(cases)
    assert [d[0] for d in cur.description] == \
        ["k"] + [f"c{i}" for i in range(len(cases))]


def test_postgresql_arrays(daemon, target):
    # They travel as their text form ('{1,NULL,"a b"}'); the client reads
    # them into lists, as psycopg2 does.
    if "postgresql" not in daemon.urls:
        pytest.skip("no postgresql server")
    conn = dbapi.connect("postgresql")
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT ARRAY[1, -2, NULL]::int4[] AS a, "
            "ARRAY['x', 'y z', 'q\"uote', 'NULL', '', NULL]::text[] AS b, "
            "ARRAY[[1.5, 2], [3, NULL]]::numeric[] AS c, "
            "ARRAY[true, false]::bool[] AS d, "
            "ARRAY['2024-01-02 03:04:05']::timestamp[] AS e, "
            "'{}'::int8[] AS f, ARRAY[0.25]::float8[] AS g")
        assert [d[1] for d in cur.description] == [
            "int4[]", "text[]", "numeric[]", "bool[]", "timestamp[]",
            "int8[]", "float8[]"]
        assert cur.fetchone() == (
            [1, -2, None],
            ["x", "y z", 'q"uote', "NULL", "", None],
            [[Decimal("1.5"), Decimal("2")],
             [Decimal("3"), None]],
            [True, False],
            [datetime.datetime(2024, 1, 2, 3, 4, 5)],
            [],
            [0.25])
    finally:
        conn.close()


def test_sqlite_mixed_storage_classes_in_one_column(daemon, target,
                                                     table_name):
    conn = dbapi.connect("sqlite")
    conn.autocommit = True
    cur = conn.cursor()
    stored = [1, "text", b"\x01", 7.5, None, -(2**40), ""]
    try:
        cur.execute(f"CREATE TABLE {table_name} (k INTEGER PRIMARY KEY, v)")
        cur.executemany(f"INSERT INTO {table_name} (v) VALUES (?)",
                        [(v,) for v in stored])
        for chunk in (0, 1, 3):
            cur.execute(f"SELECT v FROM {table_name} ORDER BY k",
                        chunk_rows=chunk)
            got = [r[0] for r in cur.fetchall()]
            assert [(type(v), v) for v in got] == \
                [(type(v), v) for v in stored], chunk
    finally:
        conn.close()


@pytest.mark.parametrize("value", [0.0, -0.0, 1e-310, float("inf"),
                                   float("-inf")])
def test_double_round_trip_as_parameter(backend, conn, value):
    if backend != "postgresql" and value in (float("inf"), float("-inf")):
        pytest.skip("only PostgreSQL stores infinities")
    cur = conn.cursor()
    cast = {"postgresql": "float8", "mariadb": "double", "sqlite": "REAL"}
    sql = f"SELECT CAST(? AS {cast[backend]}) AS v"
    got = cur.execute(sql, (value,)).fetchone()[0]
    assert type(got) is float and got == value
    if backend != "mariadb":  # MariaDB itself turns -0e0 into 0
        assert str(got) == str(value)  # the sign of zero too


# --- many batches give what one batch gives ----------------------------------

COLUMNS = {
    "sqlite": "i INTEGER, n INTEGER, d REAL, s TEXT, b BLOB, t TEXT, m NUMERIC",
    "postgresql": "i integer, n bigint, d double precision, s varchar(20), "
                  "b bytea, t timestamp, m numeric(20,6)",
    "mariadb": "i int, n bigint, d double, s varchar(20), b blob, "
               "t datetime(6), m decimal(20,6)",
}


def rows_for(n):
    start = DT(2024, 1, 1)
    for i in range(1, n + 1):
        big = {1: I64_MIN, 2: I64_MAX}.get(i, (i - 500) * 10**15 + i)
        yield (i, big,
               None if i % 7 == 0 else i / 8 - 40,
               None if i % 10 == 0 else f"s{i}",
               bytes([i % 256]) * (i % 5),
               start + TD(seconds=i, microseconds=i),
               Decimal(i - 300) / 8)


def expected_row(backend, row):
    i, n, d, s, b, t, m = row
    if backend == "sqlite":
        # As stored: the timestamp's ISO text, NUMERIC as int or float.
        t = t.isoformat(sep=" ")
        m = int(m) if m == int(m) else float(m)
    return (i, n, d, s, b, t, m)


def test_many_small_batches_equal_one_batch(backend, conn, table_name):
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table_name} ({COLUMNS[backend]})")
    rows = list(rows_for(1000))
    cur.executemany(f"INSERT INTO {table_name} VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows)
    sql = f"SELECT * FROM {table_name} ORDER BY i"
    cur.execute(sql, chunk_rows=7)
    first = cur.fetchone()
    assert len(cur._rows) <= 6  # the rest of its batch only
    chunked = [first] + cur.fetchall()
    cur.execute(sql, chunk_rows=1000)
    cur.fetchone()
    assert len(cur._rows) == 999  # one batch
    whole = [first] + cur.fetchall()
    assert chunked == whole
    expected = [expected_row(backend, r) for r in rows]
    assert [tuple(map(type, r)) for r in whole] == \
        [tuple(map(type, r)) for r in expected]
    assert whole == expected


# --- the varint decoder ------------------------------------------------------

def encoded(values):
    """Protobuf's own packed encoding of int64 values."""
    return _columns._packed_payload(values_pb2.Int64Vector(values=values))


EDGES = [0, 1, -1, 127, 128, 255, 256, 16383, 16384, -128, -129, 2**31 - 1,
         -2**31, 2**32, 2**35 + 7, -2**35, 2**56, 2**62, -2**62, I64_MAX,
         I64_MIN, I64_MIN + 1]


@pytest.mark.parametrize("seed", range(5))
def test_decode_varints_matches_protobuf(seed):
    rng = random.Random(seed)
    values = [rng.choice([
        rng.randint(-100, 100),
        rng.randint(I64_MIN, I64_MAX),
        rng.randint(-2**rng.randint(1, 62), 2**rng.randint(1, 62)),
    ]) for _ in range(5000)] + EDGES
    rng.shuffle(values)
    decoded = _columns.decode_varints(encoded(values))
    assert decoded.dtype.name == "int64"
    assert decoded.tolist() == values


@pytest.mark.parametrize("values", [[], [0], [5, 127, 0], [-1], [I64_MIN],
                                    [I64_MAX], [300], EDGES])
def test_decode_varints_edges(values):
    assert _columns.decode_varints(encoded(values)).tolist() == values


@pytest.mark.parametrize("rows", [3, 64, 500])
def test_decode_column_with_nulls(rows):
    """Both paths (Python values for small batches, numpy for large) give
    the same rows, NULLs where marked."""
    rng = random.Random(rows)
    values = [rng.randint(I64_MIN, I64_MAX) for _ in range(rows)]
    nulls = [i % 3 == 0 for i in range(rows)]
    vector = values_pb2.ColumnVector(
        nulls=nulls, int64s=values_pb2.Int64Vector(
            values=[0 if null else v for v, null in zip(values, nulls)]))
    column = values_pb2.Column(name="n", database_type="int8",
                               kind=values_pb2.VALUE_KIND_INT64)
    data = _columns.decode_column(vector, rows)
    got = _columns.python_values(column, data, "postgresql")
    assert got == [None if null else v for v, null in zip(values, nulls)]
    assert all(type(v) is int for v in got if v is not None)
