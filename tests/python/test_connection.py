"""connbroker.connection(): st.connection's SQLConnection without Streamlit.

DataFrames with dtypes from the schema, chunked iteration, query() cached in
the daemon (ttl, and Streamlit's ttl=None), session() transactions, reset().
"""

import datetime
import decimal

import numpy as np
import pandas as pd
import pytest

import connbroker

# The column types a table of every backend has, in its own spelling.
_DDL = {
    "sqlite": "id INTEGER NOT NULL, x REAL, label TEXT, ts DATETIME, "
              "amount NUMERIC(10,2), flag BOOLEAN, n INTEGER",
    "postgresql": "id BIGINT NOT NULL, x DOUBLE PRECISION, label TEXT, "
                  "ts TIMESTAMP, amount NUMERIC(10,2), flag BOOLEAN, n INT",
    "mariadb": "id BIGINT NOT NULL, x DOUBLE, label TEXT, ts DATETIME(6), "
               "amount DECIMAL(10,2), flag BOOLEAN, n INT",
}


@pytest.fixture
def filled(backend, target, table_name):
    """A connection and a table of three rows, one of them all NULL."""
    conn = connbroker.connection(backend)
    with conn.session() as s:
        s.execute(f"CREATE TABLE {table_name} ({_DDL[backend]})")
    with conn.session() as s:
        rows = [
            (1, 1.5, "a", "2024-01-02 03:04:05.250000", "12.34", True, 7),
            (2, None, None, None, None, None, None),
            (3, -2.25, "c", "1999-12-31 23:59:59", "-0.01", False, -8),
        ]
        for row in rows:
            s.execute(f"INSERT INTO {table_name} VALUES (?, ?, ?, ?, ?, ?, ?)",
                      row)
    return conn, table_name


def test_query_returns_a_frame_with_dtypes_from_the_schema(filled, backend):
    conn, table = filled
    df = conn.query(f"SELECT * FROM {table} ORDER BY id", ttl=0)
    assert list(df.columns) == ["id", "x", "label", "ts", "amount", "flag",
                                "n"]
    assert df["id"].tolist() == [1, 2, 3]
    assert pd.api.types.is_integer_dtype(df["id"].dtype)
    # A nullable integer column stays integer: pandas' Int64 with <NA>.
    assert df["n"].dtype == pd.Int64Dtype()
    assert df["n"].isna().tolist() == [False, True, False]
    assert df["n"].dropna().tolist() == [7, -8]
    assert df["x"].dtype == np.float64
    assert np.isnan(df["x"][1]) and df["x"][2] == -2.25
    assert df["label"].tolist() == ["a", None, "c"]
    assert pd.api.types.is_datetime64_dtype(df["ts"].dtype)
    assert df["ts"][0] == pd.Timestamp("2024-01-02 03:04:05.25")
    assert pd.isna(df["ts"][1])
    if backend == "sqlite":
        # SQLite keeps NUMERIC as a number it can store exactly or not.
        assert df["amount"][0] == pytest.approx(12.34)
    else:
        assert df["amount"].tolist()[0] == decimal.Decimal("12.34")
        assert df["amount"].tolist()[2] == decimal.Decimal("-0.01")
        assert df["amount"][1] is None


def test_index_col_and_params(filled):
    conn, table = filled
    df = conn.query(f"SELECT id, label FROM {table} WHERE id >= :low "
                    "ORDER BY id", params={"low": 2}, index_col="id", ttl=0)
    assert df.index.tolist() == [2, 3]
    assert df.loc[3, "label"] == "c"


def test_chunksize_yields_frames_of_that_many_rows(backend, target):
    conn = connbroker.connection(backend)
    sql = ("WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
           "WHERE n < 1000) SELECT n FROM s")
    chunks = list(conn.query(sql, chunksize=300, ttl=0))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    assert pd.concat(chunks)["n"].tolist() == list(range(1, 1001))
    assert all(c.index[0] == 0 for c in chunks)


def test_query_is_cached_in_the_daemon_by_default(filled, daemon):
    conn, table = filled
    sql = f"SELECT count(*) AS c FROM {table}"
    hits = daemon.stats()["result_cache_hits"]
    first = conn.query(sql)  # ttl=None: cached until reset, as Streamlit
    with conn.session() as s:
        s.execute(f"DELETE FROM {table}")
    # Another client asking the same question gets the cached answer.
    second = connbroker.connection(conn.name).query(sql)
    assert first["c"][0] == second["c"][0] == 3
    assert daemon.stats()["result_cache_hits"] == hits + 1
    assert conn.query(sql, ttl=0)["c"][0] == 0
    conn.reset()  # drops the cached results too
    assert conn.query(sql)["c"][0] == 0


def test_session_commits_at_the_end_and_rolls_back_on_error(filled):
    conn, table = filled
    with pytest.raises(RuntimeError):
        with conn.session() as s:
            s.execute(f"DELETE FROM {table} WHERE id = 1")
            assert len(s.query(f"SELECT id FROM {table}")) == 2
            raise RuntimeError("give up")
    assert conn.query(f"SELECT id FROM {table}", ttl=0)["id"].size == 3
    with conn.session() as s:
        assert s.execute(f"DELETE FROM {table} WHERE id = 1") == 1
    assert sorted(conn.query(f"SELECT id FROM {table}", ttl=0)["id"]) == [2, 3]


def test_a_statement_without_rows_is_refused_by_query(filled):
    conn, table = filled
    with pytest.raises(connbroker.ProgrammingError):
        conn.query(f"DELETE FROM {table}", ttl=0)
    assert conn.query(f"SELECT id FROM {table}", ttl=0)["id"].size == 3


def test_errors_keep_the_database_message(backend, target):
    conn = connbroker.connection(backend)
    with pytest.raises(connbroker.ProgrammingError) as raised:
        conn.query("SELECT * FROM no_such_table_here", ttl=0)
    assert "no_such_table_here" in str(raised.value)
    with pytest.raises(connbroker.InterfaceError) as raised:
        connbroker.connection("no_such_connection")
    assert "sqlite" in str(raised.value)  # lists the configured names


def test_ttl_spellings(filled):
    conn, table = filled
    sql = f"SELECT max(id) AS m FROM {table}"
    for ttl in (60, 60.5, datetime.timedelta(minutes=1), "1h"):
        assert conn.query(sql, ttl=ttl)["m"][0] == 3
