#!/usr/bin/env bash
# Runs the coverage-guided fuzz targets in fuzz/ for a bounded time each
# (not in CI). cargo-fuzz drives libFuzzer on the installed stable
# toolchain: `--sanitizer none` needs no nightly (the code under test
# forbids unsafe code, so AddressSanitizer would watch only dependencies),
# and `-a` turns on debug assertions and overflow checks.
#
#   deploy/fuzz.sh [TARGET] [--seconds N]
#
# TARGET: signature_header, event_envelope or worker_delivery (default:
# each in turn); N: seconds per target (default 60). Installs cargo-fuzz
# into ~/.cargo/bin when missing. Builds into fuzz/target (fuzz/ is a
# workspace of its own). Each target starts from its seeds (fuzz/seeds/,
# the fixtures and past crashes) and its corpus (fuzz/corpus/, which keeps
# what the run adds: minimise it with
#   cargo fuzz cmin --sanitizer none -O -a TARGET fuzz/corpus/TARGET
# before committing it). Prints per target: runs, exec/s, coverage (edges
# and features), corpus size, and the path of a crashing input if any.
# The full libFuzzer log is fuzz/artifacts/TARGET/last-run.log.
# Exit status 1 when a target crashed or failed an assertion.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
all_targets=(signature_header event_envelope worker_delivery)
cargo_fuzz_version=0.13.2

usage() {
  echo "usage: deploy/fuzz.sh [${all_targets[*]// /|}] [--seconds N]" >&2
  exit 2
}

targets=()
seconds=60
while [ $# -gt 0 ]; do
  case $1 in
    --seconds)
      [ $# -ge 2 ] || usage
      seconds=$2
      shift 2
      ;;
    --seconds=*)
      seconds=${1#--seconds=}
      shift
      ;;
    -h | --help) usage ;;
    -*) usage ;;
    *)
      if [[ " ${all_targets[*]} " != *" $1 "* ]]; then
        echo "deploy/fuzz.sh: unknown target '$1' (expected one of: ${all_targets[*]})" >&2
        exit 2
      fi
      targets+=("$1")
      shift
      ;;
  esac
done
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "deploy/fuzz.sh: --seconds expects a whole number of seconds, found '$seconds'" >&2
  exit 2
fi
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz $cargo_fuzz_version into ~/.cargo/bin"
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

# The same flags for build and run, so `run` does not build again.
flags=(--sanitizer none -O -a)
echo "building the fuzz targets (fuzz/target)"
cargo fuzz build "${flags[@]}"

# A value of libFuzzer's final statistics (`stat::NAME: VALUE`).
stat() {
  sed -n "s/^stat::$1: *//p" "$2" | tail -n 1
}

crashed=()
for target in "${targets[@]}"; do
  corpus=$repo/fuzz/corpus/$target
  artifacts=$repo/fuzz/artifacts/$target
  log=$artifacts/last-run.log
  mkdir -p "$corpus" "$artifacts"
  echo "fuzzing $target for $seconds s"
  status=0
  cargo fuzz run "${flags[@]}" "$target" "$corpus" "$repo/fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -dict="$repo/fuzz/idv.dict" -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
  # The last status line: `#N DONE cov: E ft: F corp: C/S …`.
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  coverage=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/\1 edges, \2 features/p' <<<"$last")
  entries=$(find "$corpus" -type f | wc -l)
  size=$(du -sh "$corpus" | cut -f1)
  printf '%s: %s runs, %s exec/s, coverage %s, corpus %s files (%s)\n' \
    "$target" "$(stat number_of_executed_units "$log")" "$(stat average_exec_per_sec "$log")" \
    "${coverage:-unknown}" "$entries" "$size"
  if [ "$status" -ne 0 ]; then
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "$target: FAILED (exit $status): input ${input:-not written}; log $log" >&2
    grep -m 3 -E "panicked at|assertion" "$log" >&2 || true
    crashed+=("$target")
  fi
done

if [ ${#crashed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${crashed[*]}" >&2
  exit 1
fi
echo "fuzz: no crash in ${targets[*]} ($seconds s each)"
