"""The package's transport: gRPC C++ (connbroker._native) in the build,
grpcio as the fallback, and what an interrupted call leaves behind."""

import os
import signal
import subprocess
import sys
import textwrap

from conftest import wait_for

from connbroker import _transport, dbapi


def test_the_build_uses_the_grpc_cpp_transport():
    # The build must not fall back to grpcio silently (ctest runs some
    # suites again with CONNBROKER_TRANSPORT=grpcio on purpose).
    expected = os.environ.get("CONNBROKER_TRANSPORT") or "native"
    assert _transport.TRANSPORT == expected


def test_ctrl_c_cancels_a_running_query_and_the_transaction(backend, target,
                                                            daemon):
    if backend == "sqlite":
        sleep = ("WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 "
                 "FROM s) SELECT count(*) FROM s")  # runs until interrupted
    elif backend == "postgresql":
        sleep = "SELECT pg_sleep(60)"
    else:
        sleep = "SELECT SLEEP(60)"
    # A process of its own, because it sends itself SIGINT (Ctrl-C) while
    # the query runs; it reports each step on stdout.
    code = textwrap.dedent(f"""
        import os, signal, sys, threading
        from connbroker import dbapi
        conn = dbapi.connect({backend!r})
        cur = conn.cursor()
        conn.begin()
        print("begun", flush=True)
        sys.stdin.readline()  # the test saw the query start
        try:
            cur.execute({sleep!r})
            print("finished", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        try:
            cur.execute("SELECT 1")
        except dbapi.OperationalError as e:
            print("refused:", e, flush=True)
        conn.rollback()
        cur.execute("SELECT 42")
        print("after rollback", cur.fetchall(), flush=True)
    """)
    env = dict(os.environ, CONNBROKER_TARGET=daemon.target)
    child = subprocess.Popen([sys.executable, "-c", code], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "begun"
        stats = daemon.stats()
        before = stats["transactions_open"]
        assert before >= 1
        child.stdin.write("go\n")
        child.stdin.flush()
        # Once the daemon has counted the query, the child is inside
        # execute(); then Ctrl-C.
        wait_for(lambda: daemon.stats()["queries"] > stats["queries"],
                 what="the query")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=50)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    lines = out.splitlines()
    assert lines[0] == "interrupted", (out, err)
    assert lines[1].startswith("refused:") and "rollback()" in lines[1]
    assert lines[2] == "after rollback [(42,)]"
    # The daemon rolled the transaction back when the stream ended.
    wait_for(lambda: daemon.stats()["transactions_open"] == before - 1,
             what="the transaction's rollback")
