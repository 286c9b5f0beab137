#!/usr/bin/python3
"""The Python benchmarks (group "python" of tests/bench/run.sh).

Prints markdown table rows in connbroker_bench's columns (scenario, clients,
ops/s, p50 us, p99 us, notes), so run.sh can append them to its table:

P1. `SELECT 1` from Python on a kept connection: connbroker.dbapi (one
    connect, then cursor.execute("SELECT 1"); cursor.fetchall() in a loop,
    autocommit) on the daemon's `pg` and `bench` (SQLite) connections,
    uncached and as result-cache hits (ttl), against psycopg2 through
    PgBouncer (and straight to PostgreSQL, for reference), with 1 and N
    separate Python processes released together; rates are summed.
P2. a 1M-row x 4-column DataFrame (bigint, double precision, short text,
    timestamp) through the broker (connbroker.connection("pg").query(sql)
    when the package has it; connbroker.dbapi fetchall + pd.DataFrame too)
    against pandas.read_sql(sql, psycopg2 connection) straight to
    PostgreSQL; rows/s and the peak RSS of the Python process.

    /usr/bin/python3 python_bench.py --target unix:/path/b.sock
        [--seconds N] [--clients 8] [--daemon-pid P] [--bouncer-pid P]
        [--rows 1000000] [--header] [--only select1,frame]

The PostgreSQL server comes from CONNBROKER_TEST_PG_* (tests/servers'
env.sh), PgBouncer's port from CONNBROKER_BENCH_PGBOUNCER_PORT; the daemon
must serve connections `pg` (that server) and `bench` (SQLite). The frame
table (`py_frame`) is created straight through psycopg2 when missing.
Every call checks its answer; a mismatch aborts the run.
"""

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"
FRAME_TABLE = "py_frame"
FRAME_SQL = f"SELECT id, value, label, ts FROM {FRAME_TABLE}"
WARMUP_CALLS = 20


def die(message):
    print(f"python_bench: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def progress(message):
    print(f"python_bench: {message}", file=sys.stderr, flush=True)


def pg_params(bouncer=False):
    env = os.environ
    try:
        params = dict(host=env["CONNBROKER_TEST_PG_HOST"],
                      port=int(env["CONNBROKER_TEST_PG_PORT"]),
                      user=env["CONNBROKER_TEST_PG_USER"],
                      password=env["CONNBROKER_TEST_PG_PASSWORD"],
                      dbname=env["CONNBROKER_TEST_PG_DATABASE"])
    except KeyError as e:
        die(f"{e.args[0]} is not set (source the servers' env.sh)")
    if bouncer:
        port = env.get("CONNBROKER_BENCH_PGBOUNCER_PORT")
        if not port:
            die("CONNBROKER_BENCH_PGBOUNCER_PORT is not set")
        params.update(host="127.0.0.1", port=int(port))
    return params


# --- workers (separate processes) -----------------------------------------

def _select1_setup(kind):
    """(call, check) for a SELECT 1 worker: call() runs one statement and
    returns what check(result) verifies."""
    if kind.startswith("psycopg2"):
        import psycopg2
        conn = psycopg2.connect(**pg_params(bouncer=kind == "psycopg2_bouncer"))
        conn.autocommit = True
        cur = conn.cursor()

        def call():
            cur.execute("SELECT 1")
            return cur.fetchall()

        def check(rows, warmup=False):
            if rows != [(1,)]:
                die(f"{kind}: SELECT 1 gave {rows!r}")
        return call, check

    if kind == "grpc_bare_sqlite":
        return _bare_setup("bench")

    from connbroker import dbapi
    name = "bench" if "sqlite" in kind else "pg"
    cached = kind.endswith("_cache")
    conn = dbapi.connect(name)
    conn.autocommit = True
    cur = conn.cursor()
    ttl = 600 if cached else None

    def call():
        cur.execute("SELECT 1", ttl=ttl)
        return cur.fetchall(), cur.from_cache

    def check(answer, warmup=False):
        rows, from_cache = answer
        if rows != [(1,)]:
            die(f"{kind}: SELECT 1 gave {rows!r}")
        # The first warm-up call of a cached kind fills the cache.
        if from_cache != cached and not (warmup and cached):
            die(f"{kind}: from_cache is {from_cache}, expected {cached}")
    return call, check


def _bare_setup(name):
    """The floor under dbapi: the generated stub's Session stream fed from a
    queue (as the package feeds it), one request in flight, no DB-API."""
    import queue
    import grpc
    from connbroker.v1 import broker_pb2, service_pb2_grpc, session_pb2
    channel = grpc.insecure_channel(os.environ["CONNBROKER_TARGET"])
    stub = service_pb2_grpc.ConnectionBrokerStub(channel)
    handle = stub.Connect(broker_pb2.ConnectRequest(name=name)).handle
    requests = queue.SimpleQueue()
    answers = stub.Session(iter(requests.get, None))
    next_id = [0]

    def call():
        next_id[0] += 1
        request = session_pb2.SessionRequest(id=next_id[0])
        request.query.target.handle = handle
        request.query.sql = "SELECT 1"
        requests.put(request)
        values = []
        while True:
            answer = next(answers)
            if answer.HasField("error"):
                die(f"bare Session stream: {answer.error}")
            if answer.HasField("batch"):
                values.extend(answer.batch.columns[0].int64s.values)
            if answer.HasField("summary"):
                return values

    def check(values, warmup=False):
        if values != [1]:
            die(f"bare Session stream: SELECT 1 gave {values!r}")
    return call, check


def _frame_setup(kind):
    """run() builds the DataFrame of FRAME_SQL once."""
    import warnings
    import pandas as pd
    warnings.simplefilter("ignore")  # pandas' "only SQLAlchemy" notice

    if kind == "frame_read_sql":
        import psycopg2
        conn = psycopg2.connect(**pg_params())
        conn.autocommit = True
        return lambda: pd.read_sql(FRAME_SQL, conn)
    if kind == "frame_broker":
        import connbroker
        conn = connbroker.connection("pg")
        # ttl=0: run by PostgreSQL every time, as read_sql is. query()'s
        # default (ttl=None, Streamlit's) would serve every run after the
        # first from the daemon's result cache.
        return lambda: conn.query(FRAME_SQL, ttl=0)
    if kind == "frame_broker_cached":
        import connbroker
        conn = connbroker.connection("pg")
        conn.query(FRAME_SQL, ttl=600)  # fills the cache before timing
        return lambda: conn.query(FRAME_SQL, ttl=600)
    if kind == "frame_dbapi":
        from connbroker import dbapi
        conn = dbapi.connect("pg")
        conn.autocommit = True

        def run():
            cur = conn.cursor()
            cur.execute(FRAME_SQL)
            rows = cur.fetchall()
            names = [d[0] for d in cur.description]
            cur.close()
            return pd.DataFrame.from_records(rows, columns=names)
        return run
    die(f"unknown worker kind {kind}")


def check_frame(kind, df, rows):
    import pandas as pd
    if list(df.columns) != ["id", "value", "label", "ts"] or len(df) != rows:
        die(f"{kind}: frame {list(df.columns)} x {len(df)} rows")
    if int(df["id"].sum()) != rows * (rows + 1) // 2:
        die(f"{kind}: ids sum to {df['id'].sum()}")
    if float(df["value"].sum()) != 0.25 * rows * (rows + 1) / 2:
        die(f"{kind}: values sum to {df['value'].sum()}")
    lengths = df["label"].str.len()
    if int(lengths.min()) < 2 or int(lengths.max()) > 4:
        die(f"{kind}: label lengths {lengths.min()}..{lengths.max()}")
    ts = pd.to_datetime(df["ts"])
    first = pd.Timestamp("2024-01-01 00:00:01")
    last = first + pd.Timedelta(seconds=rows - 1)
    if ts.min() != first or ts.max() != last:
        die(f"{kind}: timestamps {ts.min()}..{ts.max()}")


def rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(args):
    """Set up, warm up, say "ready", wait for "go", run for args.seconds,
    print the result as one JSON line."""
    kind = args.worker
    frame = kind.startswith("frame_")
    if frame:
        run = _frame_setup(kind)
    else:
        call, check = _select1_setup(kind)
        for _ in range(WARMUP_CALLS):
            check(call(), warmup=True)
    baseline_kb = rss_kb()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        die("worker: no go")
    latencies = []
    clock = time.perf_counter_ns
    cpu0 = os.times()
    start = clock()
    deadline = start + int(args.seconds * 1e9)
    if frame:
        now = start
        while not latencies or now < deadline:
            t0 = clock()
            df = run()
            now = clock()
            latencies.append(now - t0)
            if len(latencies) == 1:
                first_peak_kb = rss_kb()
            check_frame(kind, df, args.rows)
            dtypes = {c: str(t) for c, t in df.dtypes.items()}
            del df
            now = clock()
    else:
        now = start
        while now < deadline:
            t0 = clock()
            answer = call()
            now = clock()
            latencies.append(now - t0)
            check(answer)
        dtypes = None
        first_peak_kb = rss_kb()
    elapsed = clock() - start
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(json.dumps({
        "calls": len(latencies), "elapsed_ns": elapsed, "cpu_s": cpu,
        "latencies_ns": latencies, "baseline_kb": baseline_kb,
        "peak_kb": first_peak_kb, "dtypes": dtypes}), flush=True)


# --- the driver -------------------------------------------------------------

def proc_cpu_s(pid):
    """utime + stime of a process, in seconds (None without a pid)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Measurement:
    def __init__(self, kind, clients, results, elapsed_s, daemon_cpu,
                 bouncer_cpu):
        self.kind = kind
        self.clients = clients
        self.results = results
        self.calls = sum(r["calls"] for r in results)
        # Each process ran for its own elapsed time; rates add up.
        self.rate = sum(r["calls"] / (r["elapsed_ns"] / 1e9) for r in results)
        lat = sorted(x for r in results for x in r["latencies_ns"])
        self.p50_us = lat[len(lat) // 2] / 1e3
        self.p99_us = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e3
        self.client_cpu_us = (sum(r["cpu_s"] for r in results) /
                              self.calls * 1e6)
        self.daemon_cpu_us = (None if daemon_cpu is None
                              else daemon_cpu / self.calls * 1e6)
        self.bouncer_cpu_us = (None if bouncer_cpu is None
                               else bouncer_cpu / self.calls * 1e6)
        self.peak_kb = max(r["peak_kb"] for r in results)
        self.baseline_kb = max(r["baseline_kb"] for r in results)
        self.dtypes = results[0].get("dtypes")
        self.elapsed_s = elapsed_s


def measure(args, kind, clients):
    """Runs `clients` worker processes of `kind`, released together."""
    env = dict(os.environ, CONNBROKER_TARGET=args.target)
    cmd = [PYTHON, os.path.abspath(__file__), "--worker", kind,
           "--seconds", str(args.seconds), "--rows", str(args.rows),
           "--target", args.target]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True)
             for _ in range(clients)]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                p.wait()
                die(f"{kind}: a worker failed to start (exit {p.returncode})")
        daemon0 = proc_cpu_s(args.daemon_pid)
        bouncer0 = proc_cpu_s(args.bouncer_pid)
        start = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            line = p.stdout.readline()
            if p.wait() != 0 or not line:
                die(f"{kind}: a worker failed (exit {p.returncode})")
            results.append(json.loads(line))
        elapsed = time.monotonic() - start
        daemon1 = proc_cpu_s(args.daemon_pid)
        bouncer1 = proc_cpu_s(args.bouncer_pid)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return Measurement(
        kind, clients, results, elapsed,
        None if daemon0 is None or daemon1 is None else daemon1 - daemon0,
        None if bouncer0 is None or bouncer1 is None else bouncer1 - bouncer0)


def fmt_rate(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.2f}"


def fmt_us(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def row(scenario, m, notes):
    print(f"| {scenario} | {m.clients} | {fmt_rate(m.rate)} | "
          f"{fmt_us(m.p50_us)} | {fmt_us(m.p99_us)} | {notes} |", flush=True)


def cpu_notes(m, daemon=True):
    parts = []
    if daemon and m.daemon_cpu_us is not None:
        parts.append(f"daemon {m.daemon_cpu_us:.0f} us")
    if m.bouncer_cpu_us is not None and m.kind == "psycopg2_bouncer":
        parts.append(f"PgBouncer {m.bouncer_cpu_us:.0f} us")
    parts.append(f"client {m.client_cpu_us:.0f} us")
    return "CPU/call: " + ", ".join(parts)


def select1_group(args):
    for clients in sorted({1, args.clients}):
        progress(f"SELECT 1, {clients} process(es)")
        bouncer = measure(args, "psycopg2_bouncer", clients)
        row("P1. psycopg2 via PgBouncer (transaction pooling), PostgreSQL "
            "`SELECT 1`", bouncer,
            "kept connection, autocommit, execute + fetchall; "
            + cpu_notes(bouncer, daemon=False))
        for kind, label, what in [
                ("broker_pg", "P1. broker dbapi, PostgreSQL `SELECT 1`",
                 "uncached"),
                ("broker_pg_cache",
                 "P1. broker dbapi, result-cache hit `SELECT 1` (ttl 600 s, "
                 "pg)", "every timed call a hit"),
                ("broker_sqlite", "P1. broker dbapi, SQLite `SELECT 1`",
                 "uncached"),
                ("broker_sqlite_cache",
                 "P1. broker dbapi, result-cache hit `SELECT 1` (ttl 600 s, "
                 "SQLite)", "every timed call a hit")]:
            m = measure(args, kind, clients)
            row(label, m, f"**{m.rate / bouncer.rate:.2f}x psycopg2 via "
                f"PgBouncer** (target >= 1); {what}; kept Session stream, "
                f"autocommit, execute + fetchall; {cpu_notes(m)}")
        bare = measure(args, "grpc_bare_sqlite", clients)
        row("P1. bare grpcio Session stream, SQLite `SELECT 1`", bare,
            f"floor under dbapi: generated stub fed from a queue, one "
            f"request in flight; {bare.rate / bouncer.rate:.2f}x psycopg2 "
            f"via PgBouncer; {cpu_notes(bare)}")
        direct = measure(args, "psycopg2_direct", clients)
        row("P1. psycopg2 straight, PostgreSQL `SELECT 1`", direct,
            f"reference: kept connection, autocommit; PgBouncer is "
            f"{bouncer.rate / direct.rate:.2f}x of it; "
            + cpu_notes(direct, daemon=False))


def ensure_frame_table(rows):
    import psycopg2
    conn = psycopg2.connect(**pg_params())
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (FRAME_TABLE,))
    if cur.fetchone()[0]:
        cur.execute(f"SELECT count(*), max(id) FROM {FRAME_TABLE}")
        if cur.fetchone() == (rows, rows):
            conn.close()
            return
        cur.execute(f"DROP TABLE {FRAME_TABLE}")
    progress(f"creating {FRAME_TABLE} ({rows} rows)")
    cur.execute(f"""CREATE TABLE {FRAME_TABLE} (
        id bigint NOT NULL, value double precision NOT NULL,
        label text NOT NULL, ts timestamp NOT NULL)""")
    cur.execute(f"""INSERT INTO {FRAME_TABLE}
        SELECT i, i * 0.25, 'k' || (i %% 1000),
               timestamp '2024-01-01' + i * interval '1 second'
        FROM generate_series(1, %s) AS i""", (rows,))
    cur.execute(f"VACUUM ANALYZE {FRAME_TABLE}")
    # Read once so that every timed run finds it in shared buffers.
    cur.execute(f"SELECT count(*) FROM {FRAME_TABLE}")
    conn.close()


def frame_notes(m, rows, reference=None):
    rows_per_s = rows * m.rate
    notes = [f"{rows_per_s / 1e6:.2f}M rows/s"]
    if reference is not None:
        notes.insert(0, f"**{m.rate / reference.rate:.2f}x read_sql** "
                     f"(target > 1)")
    notes.append(f"{m.calls} runs")
    peak = m.peak_kb / 1024
    base = m.baseline_kb / 1024
    note = f"peak RSS (first run) {peak:.0f} MB ({peak - base:+.0f} MB over {base:.0f} " \
           f"MB after imports and connect)"
    if reference is not None:
        note += f", {m.peak_kb / reference.peak_kb:.2f}x read_sql's"
    notes.append(note)
    notes.append(f"CPU/query: client {m.client_cpu_us / 1e6:.2f} s" +
                 ("" if m.daemon_cpu_us is None or reference is None
                  else f", daemon {m.daemon_cpu_us / 1e6:.2f} s"))
    dtypes = m.dtypes or {}
    notes.append("dtypes " + "/".join(dtypes.get(c, "?")
                                      for c in ("id", "value", "label", "ts")))
    return "; ".join(notes)


def frame_group(args):
    ensure_frame_table(args.rows)
    shape = f"{args.rows / 1e6:g}M rows x 4 cols"
    progress(f"DataFrame {shape}: pandas.read_sql")
    ref = measure(args, "frame_read_sql", 1)
    row(f"P2. pandas.read_sql(sql, psycopg2) straight, DataFrame {shape}",
        ref, frame_notes(ref, args.rows) +
        "; psycopg2 default cursor (whole result in libpq, a Python object "
        "per cell)")
    broker_rows = [
        ("frame_broker", "broker `connbroker.connection(\"pg\").query(sql, "
         "ttl=0)`", "run by PostgreSQL every time; built column-wise from "
         "the batches"),
        ("frame_broker_cached", "broker `connbroker.connection(\"pg\")"
         ".query(sql, ttl=600)`, result-cache hit", "every timed run served "
         "from the daemon's result cache (what query()'s default ttl=None "
         "gives after the first run)"),
        ("frame_dbapi", "broker dbapi fetchall + `pd.DataFrame.from_records`",
         "row tuples, a Python object per cell (what a DB-API user without "
         ".query() would write)"),
    ]
    for kind, label, note in broker_rows:
        progress(f"DataFrame {shape}: {kind}")
        m = measure(args, kind, 1)
        row(f"P2. {label}, DataFrame {shape}", m,
            f"{frame_notes(m, args.rows, ref)}; {note}")


def machine_line(args):
    cpu = "cpu unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    u = os.uname()
    return (f"machine: nproc {os.cpu_count()}, {cpu}, Linux {u.release}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
            f"{args.seconds:g} s a scenario")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--daemon-pid", type=int, default=0)
    parser.add_argument("--bouncer-pid", type=int, default=0)
    parser.add_argument("--header", action="store_true",
                        help="print the machine line and the table header")
    parser.add_argument("--only", default="select1,frame")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    # run.sh's clean-up sends SIGTERM: end the workers too (measure's
    # finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parts = set(args.only.split(","))
    if parts - {"select1", "frame"}:
        die(f"--only: unknown part(s) {', '.join(parts - {'select1', 'frame'})}")
    os.environ["CONNBROKER_TARGET"] = args.target
    if args.header:
        print(f"{machine_line(args)}\n")
        print("| scenario | clients | ops/s | p50 us | p99 us | notes |")
        print("| --- | ---: | ---: | ---: | ---: | --- |", flush=True)
    if "select1" in parts:
        select1_group(args)
    if "frame" in parts:
        frame_group(args)


if __name__ == "__main__":
    main()
