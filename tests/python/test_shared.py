"""Several processes, Python and the C++ CLI, share one daemon connection:
the same handle from each, one backend execution for a cached query however
many processes ask, and a crashed process's transaction rolled back."""

import ast
import json
import os
import re
import subprocess
import sys
import uuid

from conftest import CONNBROKER_CLI, run_python, wait_for
from connbroker import dbapi

N = 4  # Python processes per test


def env_for(daemon):
    return dict(os.environ, CONNBROKER_TARGET=daemon.target)


def cli_connect(daemon, name):
    """The handle `connbroker connect NAME` prints, in its table and JSON
    formats (which must agree)."""
    table = daemon.cli("connect", name).stdout
    rows = dict(re.findall(r"^(\w+)\s+\| (.*)$", table, re.M))
    assert rows["name"] == name and rows["type"] == "sql"
    as_json = json.loads(daemon.cli("connect", name, "--format",
                                    "json").stdout)
    assert as_json["handle"] == rows["handle"]
    assert as_json["created"] is False  # joined, not made
    return rows["handle"]


def test_every_process_gets_the_same_handle(daemon, backend, target):
    conn = dbapi.connect(backend)
    try:
        code = ("from connbroker import dbapi\n"
                f"print(dbapi.connect({backend!r}).handle)\n")
        handles = {run_python(code, env_for(daemon)).strip()
                   for _ in range(N)}
        handles.add(cli_connect(daemon, backend))
        assert handles == {conn.handle}
        assert re.fullmatch(r"h_[0-9a-f]{32}", conn.handle)
    finally:
        conn.close()


def test_a_handle_works_from_another_process(daemon, backend, target,
                                            table_name):
    code = f"""
from connbroker import dbapi
conn = dbapi.connect({backend!r})
cur = conn.cursor()
cur.execute("CREATE TABLE {table_name} (n INTEGER)")
conn.commit()
cur.execute("INSERT INTO {table_name} VALUES (?)", (41,))
conn.commit()
print(conn.handle)
"""
    handle = run_python(code, env_for(daemon)).strip()
    try:
        out = daemon.cli("query", "--handle", handle,
                         f"SELECT n + 1 AS m FROM {table_name}",
                         "--format", "json").stdout
        assert json.loads(out)["rows"] == [[42]]
    finally:
        daemon.cli("execute", backend, f"DROP TABLE {table_name}")


# A query slow enough for clients asking at once to overlap, tagged so no
# other test's cached result answers it.
SLOW = {
    "sqlite": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM "
              "n WHERE i < 300000) SELECT '{tag}' AS tag, count(*) AS c "
              "FROM n",
    "postgresql": "SELECT '{tag}' AS tag, count(*) AS c "
                  "FROM generate_series(1, 300000)",
    "mariadb": "SELECT '{tag}' AS tag, count(*) AS c FROM seq_1_to_300000",
}

CLIENT = """
import sys
from connbroker import dbapi
cur = dbapi.connect(sys.argv[1]).cursor()
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()  # go
cur.execute(sys.argv[2], ttl=600)
print(repr((cur.fetchall(), cur.from_cache)))
"""


def counters(daemon):
    stats = daemon.stats()
    return {k: stats[k] for k in ("backend_executions", "result_cache_hits",
                                  "result_cache_misses",
                                  "single_flight_joins")}


def delta(after, before):
    return {k: after[k] - before[k] for k in after}


def start_client(daemon, name, sql):
    p = subprocess.Popen(
        [sys.executable, "-c", CLIENT, name, sql], env=env_for(daemon),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n", p.stderr.read()
    return p


def finish(p):
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    return ast.literal_eval(out)


def cli_query(daemon, name, sql):
    return json.loads(daemon.cli("query", name, sql, "--ttl", "600",
                                 "--format", "json").stdout)


def test_a_cached_query_runs_once_for_processes_in_turn(daemon, backend):
    sql = SLOW[backend].format(tag=uuid.uuid4().hex)
    before = counters(daemon)
    answers = []
    for _ in range(N):
        p = start_client(daemon, backend, sql)
        p.stdin.write("go\n")
        p.stdin.flush()
        answers.append(finish(p))
    cli = cli_query(daemon, backend, sql)
    change = delta(counters(daemon), before)
    rows = answers[0][0]
    assert rows[0][1] == 300000
    assert [a[0] for a in answers] == [rows] * N
    assert [a[1] for a in answers] == [False] + [True] * (N - 1)
    assert cli["from_cache"] is True and cli["rows"] == [list(rows[0])]
    assert change == {"backend_executions": 1, "result_cache_hits": N,
                      "result_cache_misses": 1, "single_flight_joins": 0}


def test_a_cached_query_runs_once_for_processes_at_once(daemon, backend):
    sql = SLOW[backend].format(tag=uuid.uuid4().hex)
    before = counters(daemon)
    # Every process imported, connected and waiting: then all go at once,
    # and the C++ CLI with them.
    clients = [start_client(daemon, backend, sql) for _ in range(N)]
    for p in clients:
        p.stdin.write("go\n")
        p.stdin.flush()
    cli = subprocess.Popen(
        [CONNBROKER_CLI, "query", backend, sql, "--ttl", "600", "--format",
         "json"], env=env_for(daemon), stdout=subprocess.PIPE, text=True)
    answers = [finish(p) for p in clients]
    cli_out, _ = cli.communicate(timeout=120)
    assert cli.returncode == 0
    cli_answer = json.loads(cli_out)
    change = delta(counters(daemon), before)
    rows = answers[0][0]
    assert rows[0][1] == 300000
    assert all(a[0] == rows for a in answers)
    assert cli_answer["rows"] == [list(rows[0])]
    from_database = [a[1] for a in answers].count(False) + \
        (not cli_answer["from_cache"])
    assert from_database == 1
    # Whether a client joined the flight or hit the cache after it, the
    # database ran the query once.
    assert change["backend_executions"] == 1
    assert change["result_cache_misses"] == 1
    assert change["result_cache_hits"] + change["single_flight_joins"] == N


def test_a_crashed_process_rolls_back(daemon, backend, target, table_name):
    admin = dbapi.connect(backend)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE TABLE {table_name} (n INTEGER PRIMARY "
                           "KEY)")
    open_before = daemon.stats()["transactions_open"]
    code = f"""
import os, sys
from connbroker import dbapi
conn = dbapi.connect({backend!r})
conn.cursor().execute("INSERT INTO {table_name} VALUES (1)")
assert conn.in_transaction
sys.stdout.write("inserted\\n")
sys.stdout.flush()
sys.stdin.readline()
os._exit(3)  # no close, no rollback: the stream just ends
"""
    p = subprocess.Popen([sys.executable, "-c", code], env=env_for(daemon),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "inserted\n", p.stderr.read()
        assert daemon.stats()["transactions_open"] == open_before + 1
        p.stdin.write("die\n")
        p.stdin.flush()
        assert p.wait(timeout=60) == 3
        wait_for(lambda: daemon.stats()["transactions_open"] == open_before,
                 what="the crashed process's transaction to end")
        # Rolled back, and its locks gone: the same key goes in at once.
        cur = admin.cursor()
        cur.execute(f"INSERT INTO {table_name} VALUES (1)")
        cur.execute(f"SELECT count(*) FROM {table_name}")
        assert cur.fetchall() == [(1,)]
    finally:
        if p.poll() is None:
            p.kill()
        admin.cursor().execute(f"DROP TABLE {table_name}")
        admin.close()


def test_processes_see_each_others_commits(daemon, backend, target,
                                           table_name):
    """A write committed by one Python process is read by another and by
    the CLI; an uncommitted one by neither."""
    env = env_for(daemon)
    setup = f"""
from connbroker import dbapi
c = dbapi.connect({backend!r}); c.autocommit = True
c.cursor().execute("CREATE TABLE {table_name} (n INTEGER)")
"""
    run_python(setup, env)
    write = f"""
from connbroker import dbapi
c = dbapi.connect({backend!r})
c.cursor().execute("INSERT INTO {table_name} VALUES (1)")
c.commit()
c.cursor().execute("INSERT INTO {table_name} VALUES (2)")
c.close()  # the second insert is rolled back
"""
    run_python(write, env)
    read = f"""
from connbroker import dbapi
print(dbapi.connect({backend!r}).cursor().execute(
    "SELECT n FROM {table_name}").fetchall())
"""
    assert run_python(read, env).strip() == "[(1,)]"
    out = daemon.cli("query", backend, f"SELECT n FROM {table_name}",
                     "--format", "json").stdout
    assert json.loads(out)["rows"] == [[1]]
    daemon.cli("execute", backend, f"DROP TABLE {table_name}")
