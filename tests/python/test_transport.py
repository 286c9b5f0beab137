"""The package's transport: gRPC C++ (connbroker._native) in the build,
grpcio as the fallback, and what an interrupted call leaves behind."""

import json
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


def test_an_encoded_query_request_is_the_session_request_protobuf_makes():
    from connbroker.v1 import broker_pb2, session_pb2

    query = broker_pb2.QueryRequest(sql="SELECT 1", ttl_seconds=600,
                                    chunk_rows=7)
    query.target.handle = "h_" + "ab" * 16
    for request_id in (1, 127, 128, 300, 2**32 + 5, 2**63):
        expected = session_pb2.SessionRequest(id=request_id)
        expected.query.CopyFrom(query)
        encoded = _transport.encode_query_request(
            request_id, query.SerializeToString())
        assert session_pb2.SessionRequest.FromString(encoded) == expected


def test_a_repeated_statement_follows_a_new_handle(daemon, target):
    # The kept encoding names the handle: after a reset of the connection
    # cache (the daemon restarted and forgot the handle), the connection
    # connects again and must not send the old one.
    conn = dbapi.connect("sqlite")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchall() == [(1,)]
    old = conn.handle
    conn._connect_request.max_entries = 3  # a different cache: a new handle
    conn._connect()
    assert conn.handle != old
    cur.execute("SELECT 1")
    assert cur.fetchall() == [(1,)]
    listed = json.loads(
        daemon.cli("connections", "--format", "json").stdout)["connections"]
    queries = {c["handle"]: c["queries"] for c in listed}
    assert queries[conn.handle] == 1  # the second SELECT went to the new one
