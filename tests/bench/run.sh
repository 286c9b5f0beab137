#!/usr/bin/env bash
# Benchmarks connbrokerd: builds a Release tree (build-release/), starts a
# daemon on a SQLite file in a temporary directory, runs connbroker_bench
# against it and prints one markdown table on stdout (progress goes to
# stderr). Never part of ctest.
#
#   bash tests/bench/run.sh [--seconds N]      # N seconds a scenario (3)
set -euo pipefail

seconds=3
while (($# > 0)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    *) echo "usage: $0 [--seconds N]" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$root/build-release"

bash "$root/deploy/install-deps.sh" >&2
# Release, in a tree of its own so a Debug or sanitizer build is not timed.
# The build log is kept quiet unless it fails.
log="$(mktemp)"
if ! { cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
  cmake --build "$build" --target connbrokerd connbroker_bench; } >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "run.sh: build failed" >&2
  exit 1
fi
rm -f "$log"

# A short path: the socket's must fit in 108 bytes.
tmp="$(mktemp -d /tmp/cbbench.XXXXXX)"
daemon_pid=""
cleanup() {
  if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/secrets.toml" <<EOF
[connections.bench]
type = "sql"
url = "sqlite:///$tmp/bench.db"
EOF

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

if ! "$build/tests/bench/connbroker_bench" --target "unix:$tmp/b.sock" \
  --db "$tmp/bench.db" --connection bench --seconds "$seconds" \
  --daemon-pid "$daemon_pid"; then
  echo "run.sh: benchmark failed; the daemon's log:" >&2
  cat "$tmp/daemon.log" >&2
  exit 1
fi
