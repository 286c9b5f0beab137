#!/usr/bin/env bash
# Benchmarks connbrokerd: builds a Release tree (build-release/), starts real
# PostgreSQL and MariaDB servers (tests/servers/db-servers.sh), PgBouncer in
# transaction pooling mode in front of that PostgreSQL, and a daemon on a
# SQLite file and on those servers, all in a temporary directory; runs
# connbroker_bench against them, then the Python benchmarks
# (tests/bench/python/python_bench.py, group "python"), and prints one
# markdown table on stdout (progress goes to stderr). Never part of ctest.
#
#   bash tests/bench/run.sh [--seconds N] [--only GROUP,...]
#       N seconds a scenario (3); GROUPs: sqlite, pg, mariadb, stream, rss,
#       neighbour, session, python (default: all)
set -euo pipefail

seconds=3
only=""
while (($# > 0)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--only GROUP,...]" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$root/build-release"

bash "$root/deploy/install-deps.sh" >&2
# Release, in a tree of its own so a Debug or sanitizer build is not timed.
# The build log is kept quiet unless it fails.
log="$(mktemp)"
if ! { cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$build" --target connbrokerd connbroker_bench connbroker \
    connbroker_python; } >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "run.sh: build failed" >&2
  exit 1
fi
rm -f "$log"

# A short path: the sockets' must fit in 108 bytes. Searchable by others:
# the database servers and PgBouncer run as unprivileged users when we are
# root, and must reach their directories inside it.
tmp="$(mktemp -d /tmp/cbbench.XXXXXX)"
chmod 0755 "$tmp"
daemon_pid=""
bouncer_pid=""
bench_pid=""
servers_started=false
stop_pid() {
  local pid=$1
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
  fi
}
cleanup() {
  stop_pid "$bench_pid"
  stop_pid "$daemon_pid"
  stop_pid "$bouncer_pid"
  if $servers_started; then
    bash "$root/tests/servers/db-servers.sh" stop "$tmp/srv" >&2 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
# A ^C or kill runs the same clean-up (the EXIT trap) instead of leaving
# servers behind.
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the database servers ---------------------------------------------------

servers_started=true
bash "$root/tests/servers/db-servers.sh" start "$tmp/srv" >&2
# shellcheck source=/dev/null
source "$tmp/srv/env.sh"
pg_host=$CONNBROKER_TEST_PG_HOST
pg_port=$CONNBROKER_TEST_PG_PORT
pg_user=$CONNBROKER_TEST_PG_USER
pg_password=$CONNBROKER_TEST_PG_PASSWORD
pg_db=$CONNBROKER_TEST_PG_DATABASE

free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# PgBouncer: client side SCRAM-SHA-256 against a plain-text auth_file. With
# the password in clear, PgBouncer can also answer the server's SCRAM
# challenge (PostgreSQL 15 stores SCRAM secrets), so no password sits in the
# [databases] line and clients authenticate as they would in production.
# Run as the PostgreSQL server's user: PgBouncer refuses to run as root.
bouncer_dir="$tmp/pgbouncer"
mkdir -p "$bouncer_dir"
bouncer_port="$(free_port)"
printf '"%s" "%s"\n' "$pg_user" "$pg_password" >"$bouncer_dir/userlist.txt"
cat >"$bouncer_dir/pgbouncer.ini" <<EOF
[databases]
$pg_db = host=$pg_host port=$pg_port dbname=$pg_db

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $bouncer_dir/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 200
logfile = $bouncer_dir/pgbouncer.log
pidfile = $bouncer_dir/pgbouncer.pid
EOF
chmod 0600 "$bouncer_dir/userlist.txt"
bouncer_user="$(id -un)"
if [[ $(id -u) -eq 0 ]]; then
  bouncer_user="$CONNBROKER_TEST_PG_OS_USER"
  chown -R "$bouncer_user:" "$bouncer_dir"
  setpriv --reuid="$bouncer_user" --regid="$(id -g "$bouncer_user")" \
    --clear-groups -- /usr/sbin/pgbouncer -q "$bouncer_dir/pgbouncer.ini" \
    </dev/null 2>>"$bouncer_dir/stderr.log" &
else
  /usr/sbin/pgbouncer -q "$bouncer_dir/pgbouncer.ini" \
    </dev/null 2>>"$bouncer_dir/stderr.log" &
fi
bouncer_pid=$!
for _ in $(seq 100); do
  if PGPASSWORD="$pg_password" PGCONNECT_TIMEOUT=2 \
    "$CONNBROKER_TEST_PG_BIN/psql" -X -A -t -h 127.0.0.1 -p "$bouncer_port" \
    -U "$pg_user" -d "$pg_db" -c 'SELECT 1' >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$bouncer_pid" 2>/dev/null; then
    cat "$bouncer_dir/stderr.log" "$bouncer_dir/pgbouncer.log" >&2 || true
    echo "run.sh: pgbouncer exited during start-up" >&2
    exit 1
  fi
  sleep 0.1
done
export CONNBROKER_BENCH_PGBOUNCER_PORT="$bouncer_port"
echo "run.sh: PgBouncer on 127.0.0.1:$bouncer_port (transaction pooling," \
  "pool 20)" >&2

# ---- the daemon -------------------------------------------------------------

pg_url="postgresql://$pg_user:$pg_password@$pg_host:$pg_port/$pg_db"
my_url="mysql://$CONNBROKER_TEST_MYSQL_USER:$CONNBROKER_TEST_MYSQL_PASSWORD"
my_url+="@$CONNBROKER_TEST_MYSQL_HOST:$CONNBROKER_TEST_MYSQL_PORT"
my_url+="/$CONNBROKER_TEST_MYSQL_DATABASE"
cat >"$tmp/secrets.toml" <<EOF
[connections.bench]
type = "sql"
url = "sqlite:///$tmp/bench.db"

# pool_size 10: room for the 8 client processes without overflow backends,
# which the pool closes as they come back (as SQLAlchemy's QueuePool does),
# so the rows time the call path rather than backend churn. PgBouncer gets
# 20. pg_default keeps the broker's default pool (5 + 10 overflow) to show
# that churn.
[connections.pg]
type = "sql"
url = "$pg_url"
create_engine_kwargs = { pool_size = 10 }

[connections.pg_default]
type = "sql"
url = "$pg_url"

# One backend: the busy-neighbour rows saturate it with slow calls.
[connections.pg_small]
type = "sql"
url = "$pg_url"
create_engine_kwargs = { pool_size = 1, max_overflow = 0, pool_timeout = 120 }

[connections.mariadb]
type = "sql"
url = "$my_url"
create_engine_kwargs = { pool_size = 10 }
EOF
chmod 0600 "$tmp/secrets.toml"

# HOME and the working directory point at the temporary directory, so no
# other secrets file is merged in.
(cd "$tmp" && HOME="$tmp" CONNBROKER_SECRETS="" exec "$build/server/connbrokerd" \
  --listen "unix:$tmp/b.sock" --secrets "$tmp/secrets.toml" \
  --log-level warn 2>"$tmp/daemon.log") &
daemon_pid=$! # the subshell exec'd the daemon: this is connbrokerd's pid

# The socket appears once the daemon listens; connbroker_bench then waits
# for it to serve (Client::WaitForReady). 10 s is far beyond a normal start.
for _ in $(seq 100); do
  [[ -S "$tmp/b.sock" ]] && break
  if ! kill -0 "$daemon_pid" 2>/dev/null; then
    cat "$tmp/daemon.log" >&2
    echo "run.sh: connbrokerd exited before serving" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ ! -S "$tmp/b.sock" ]]; then
  cat "$tmp/daemon.log" >&2
  echo "run.sh: connbrokerd did not listen within 10 s" >&2
  exit 1
fi

# Group "python" is python_bench.py's; the others are connbroker_bench's.
run_bench=true
run_python=true
only_flag=()
if [[ -n "$only" ]]; then
  bench_groups=""
  run_python=false
  IFS=, read -r -a groups <<<"$only"
  for g in "${groups[@]}"; do
    if [[ "$g" == python ]]; then
      run_python=true
    else
      bench_groups+="${bench_groups:+,}$g"
    fi
  done
  if [[ -n "$bench_groups" ]]; then
    only_flag=(--only "$bench_groups")
  else
    run_bench=false
  fi
fi

# Each in the background and waited for, so that a ^C or kill reaches the
# trap at once instead of after the whole run.
if $run_bench; then
  "$build/tests/bench/connbroker_bench" --target "unix:$tmp/b.sock" \
    --db "$tmp/bench.db" --connection bench --seconds "$seconds" \
    --daemon-pid "$daemon_pid" --cli "$build/client/connbroker" \
    "${only_flag[@]}" &
  bench_pid=$!
  if ! wait "$bench_pid"; then
    echo "run.sh: benchmark failed; the daemon's log:" >&2
    cat "$tmp/daemon.log" >&2
    exit 1
  fi
fi

# The Python rows continue connbroker_bench's table (their own header when
# it did not run). Debian's python3, which has psycopg2, grpcio, numpy and
# pandas; the package from the Release tree.
if $run_python; then
  header_flag=()
  $run_bench || header_flag=(--header)
  PYTHONPATH="$build/client/python" /usr/bin/python3 \
    "$root/tests/bench/python/python_bench.py" --target "unix:$tmp/b.sock" \
    --seconds "$seconds" --daemon-pid "$daemon_pid" \
    --bouncer-pid "$bouncer_pid" "${header_flag[@]}" &
  bench_pid=$!
  if ! wait "$bench_pid"; then
    echo "run.sh: Python benchmark failed; the daemon's log:" >&2
    cat "$tmp/daemon.log" >&2
    exit 1
  fi
fi
