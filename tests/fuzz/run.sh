#!/usr/bin/env bash
# The clang half of the test command (tests/run.sh runs it after ctest).
# One clang build directory, ${FUZZ_BUILD_DIR:-build-clang}, serves both:
#  - connbrokerd built with -Wthread-safety -Werror=thread-safety
#    (CONNBROKER_THREAD_SAFETY): Abseil's ABSL_GUARDED_BY annotations in
#    server/ are checked, which gcc ignores. No sanitizers on it.
#  - the libFuzzer targets of tests/fuzz (CONNBROKER_FUZZ), with ASan and
#    UBSan on them and on their copy of config/ only. Each first replays its
#    regressions (tests/fuzz/regressions/<fuzzer>/, crashes found and fixed),
#    then fuzzes for ${FUZZ_SECONDS:-30} s from a copy of its seed corpus
#    (tests/fuzz/corpus/<fuzzer>/; the copy keeps the run's finds out of the
#    source tree). FUZZ_SECONDS=0 builds and replays only.
# Fails when the build does or a fuzzer finds a crash, hang (-timeout) or
# memory blow-up (-rss_limit_mb), printing the reproducer's path.
set -euo pipefail
cd "$(dirname "$0")/../.."
build_dir=${FUZZ_BUILD_DIR:-build-clang}
seconds=${FUZZ_SECONDS:-30}
fuzzers=(secrets_fuzzer sql_url_fuzzer kwargs_fuzzer)
# Longest input each is given: a large secrets.toml, a long URL, a few dozen
# kwargs.
declare -A max_len=([secrets_fuzzer]=8192 [sql_url_fuzzer]=1024
  [kwargs_fuzzer]=2048)
declare -A dict=([secrets_fuzzer]=tests/fuzz/secrets.dict
  [sql_url_fuzzer]=tests/fuzz/sql_url.dict)

CXX=clang++ cmake -S . -B "$build_dir" -G Ninja \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCONNBROKER_BUILD_TESTS=OFF \
  -DCONNBROKER_FUZZ=ON -DCONNBROKER_THREAD_SAFETY=ON >/dev/null
cmake --build "$build_dir" --parallel "$(nproc)" \
  --target connbrokerd "${fuzzers[@]}"
echo "fuzz: connbrokerd compiles clean with -Wthread-safety -Werror"

out=$build_dir/fuzz-out
rm -rf "$out"
mkdir -p "$out/tmp"
# The fuzzers' scratch directories (fuzz_util.h) go here: libFuzzer often
# ends a process with _Exit, which skips their removal.
TMPDIR=$(cd "$out/tmp" && pwd)
export TMPDIR
failed=0
for fuzzer in "${fuzzers[@]}"; do
  bin=$build_dir/tests/fuzz/$fuzzer
  options=(-timeout=10 -rss_limit_mb=2048 "-max_len=${max_len[$fuzzer]}"
    "-artifact_prefix=$out/$fuzzer-")
  if [[ -n ${dict[$fuzzer]:-} ]]; then options+=("-dict=${dict[$fuzzer]}"); fi

  regressions=()
  if [[ -d tests/fuzz/regressions/$fuzzer ]]; then
    mapfile -t regressions < <(find "tests/fuzz/regressions/$fuzzer" \
      -type f ! -name 'README*' | sort)
  fi
  if ((${#regressions[@]} > 0)); then
    # Given files, libFuzzer runs each once and stops at the first crash.
    if ! "$bin" "${options[@]}" "${regressions[@]}" \
      >"$out/$fuzzer-regressions.log" 2>&1; then
      echo "fuzz: $fuzzer fails a regression input:" >&2
      grep -E '^(Running|==[0-9]+==ERROR|SUMMARY)|fuzzer: ' \
        "$out/$fuzzer-regressions.log" >&2 || true
      echo "fuzz: full log: $out/$fuzzer-regressions.log" >&2
      failed=1
      continue
    fi
    echo "fuzz: $fuzzer replays ${#regressions[@]} regression input(s)"
  fi

  ((seconds > 0)) || continue
  corpus=$out/$fuzzer-corpus
  mkdir -p "$corpus"
  cp -r "tests/fuzz/corpus/$fuzzer/." "$corpus/"
  log=$out/$fuzzer.log
  if "$bin" "${options[@]}" -max_total_time="$seconds" -print_final_stats=1 \
    "$corpus" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $fuzzer: ${runs:-?} runs in ${seconds}s, no crash"
  else
    echo "fuzz: $fuzzer FAILED; the end of its log ($log):" >&2
    grep -v -E '^#[0-9]+' "$log" | tail -n 40 >&2
    for artifact in "$out/$fuzzer"-{crash,leak,timeout,oom,slow-unit}-*; do
      [[ -e $artifact ]] || continue
      echo "fuzz: reproducer: $artifact (replay: $bin $artifact)" >&2
    done
    failed=1
  fi
done
exit "$failed"
