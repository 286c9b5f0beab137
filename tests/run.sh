#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, builds, and
# runs every test -- unit tests, then integration tests that start real
# connbrokerd daemons on temporary Unix sockets with real client processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/build.sh
build_dir=${BUILD_DIR:-build}
ctest --test-dir "$build_dir" --output-on-failure --timeout 300 \
  --parallel "$(nproc)" "$@"
