#!/usr/bin/env bash
# Installs connbroker's build and test dependencies from Debian bookworm's
# packages. Idempotent: installs only what is missing; needs root (or sudo).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  protobuf-compiler libprotobuf-dev protobuf-compiler-grpc libgrpc++-dev
  libabsl-dev libtoml11-dev libsqlitecpp-dev libsqlite3-dev sqlite3
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  postgresql mariadb-server libpq-dev libmariadb-dev pgbouncer openssl
  # tests/fuzz/run.sh: clang for libFuzzer and -Wthread-safety; the fuzzer
  # and sanitizer runtimes are in libclang-rt-14-dev, which clang does not
  # depend on.
  clang libclang-rt-14-dev
  # client/python and its tests and benchmarks. Nothing comes from a
  # package index: every Python module is Debian's, for /usr/bin/python3.
  python3 python3-grpcio python3-protobuf python3-numpy python3-pandas
  python3-sqlalchemy python3-pytest python3-psycopg2 python3-setuptools
  python3-pip python3-wheel
  # Python.h, for the package's gRPC C++ transport (connbroker/_native.cc).
  python3-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq

# The postgresql and mariadb-server packages create a system cluster and try
# to start it through invoke-rc.d. The tests never use those (they start their
# own servers, tests/servers/db-servers.sh), so forbid service starts during
# the install with a policy-rc.d that answers 101, unless one is in place
# already, and remove ours afterwards, even when the install fails.
policy=/usr/sbin/policy-rc.d
remove_policy=false
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# connbroker install-deps: no service starts.\nexit 101\n' |
    $sudo tee "$policy" >/dev/null
  $sudo chmod 0755 "$policy"
  remove_policy=true
  trap '$sudo rm -f "$policy"' EXIT
fi
$sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq \
  --no-install-recommends "${missing[@]}"
if $remove_policy; then
  $sudo rm -f "$policy"
  trap - EXIT
fi
