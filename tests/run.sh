#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds, starts
# real PostgreSQL and MariaDB servers (tests/servers/db-servers.sh) and runs
# every test -- unit tests, then integration tests that start real connbrokerd
# daemons on temporary Unix sockets with real client processes, then the
# clang thread-safety build and the fuzzers (tests/fuzz/run.sh). The servers
# are stopped and their directory removed at the end, also on failure or
# interrupt. With CONNBROKER_TEST_SERVERS_DIR set (servers the caller started
# with `db-servers.sh start DIR`), those are used and left running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/build.sh
build_dir=${BUILD_DIR:-build}

servers=tests/servers/db-servers.sh
if [[ -n ${CONNBROKER_TEST_SERVERS_DIR:-} ]]; then
  [[ -f $CONNBROKER_TEST_SERVERS_DIR/env.sh ]] ||
    { echo "run.sh: no $CONNBROKER_TEST_SERVERS_DIR/env.sh" >&2; exit 1; }
  echo "run.sh: using the servers in $CONNBROKER_TEST_SERVERS_DIR"
else
  # Under /tmp, not $TMPDIR: short Unix socket paths, reachable by the
  # servers' users.
  servers_dir=$(mktemp -d /tmp/cbsrv.XXXXXX)
  stop_servers() {
    bash "$servers" stop "$servers_dir" || true
    rm -rf "$servers_dir"
  }
  trap stop_servers EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  bash "$servers" start "$servers_dir"
  CONNBROKER_TEST_SERVERS_DIR=$servers_dir
fi
# shellcheck source=/dev/null
source "$CONNBROKER_TEST_SERVERS_DIR/env.sh"

ctest --test-dir "$build_dir" --output-on-failure --timeout 300 \
  --parallel "$(nproc)" "$@"

# The clang build: connbrokerd under -Wthread-safety -Werror, and the config
# fuzzers for FUZZ_SECONDS (default 30) each. After ctest, so that its
# result shows whatever happens here; a failure here fails the command too.
bash tests/fuzz/run.sh
