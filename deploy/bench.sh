#!/usr/bin/env bash
# Runs the benchmarks (release build) against the local PostgreSQL and
# RabbitMQ, each figure next to the ceiling it is measured against in the
# same run, and writes target/bench/report.md and target/bench/latency.svg:
#   - bench_ingest: the broker's confirmed-publish ceiling, an actix handler
#     that only verifies the signature, idv-ingest at 32 and 128
#     connections (req/s, CPU per request, peak RSS), then idv-ingest open
#     loop at 10 %…100 % of its maximum;
#   - bench_worker: PostgreSQL's transaction ceiling, end-to-end events/s
#     with 1 and 2 idv-worker processes (CPU, peak RSS), the pipeline open
#     loop at 10 %…100 % of the 1-worker rate and 2 workers at half theirs;
#   - bench_report: the Markdown report and the SVG plot from their JSON.
# `--quick` makes every phase short (to try it out; the figures are rough).
# Other arguments go to bench_ingest (e.g. --connections 32,256).
# Everything they create is removed at the end. Run on an idle machine.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

ingest_args=()
worker_args=()
for arg in "$@"; do
  if [[ "$arg" == --quick ]]; then
    ingest_args+=(--seconds 3 --sweep-seconds 2)
    worker_args+=(6000 --ceiling-seconds 3 --paced-seconds 2)
  else
    ingest_args+=("$arg")
  fi
done

ensure_services
ensure_test_login
ensure_rust

out=target/bench
mkdir -p "$out"
started="$(date -u '+%Y-%m-%d %H:%M UTC')"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
commit="$(git describe --always --dirty 2>/dev/null || echo unknown)"

cargo build --release --quiet -p idv-ingest -p idv-worker -p idv-tests --bins
echo "== ingest =="
./target/release/bench_ingest --json "$out/ingest.json" "${ingest_args[@]}"
echo
echo "== worker =="
./target/release/bench_worker --json "$out/worker.json" "${worker_args[@]}"
echo
echo "== report =="
./target/release/bench_report --ingest "$out/ingest.json" --worker "$out/worker.json" \
  --out-dir "$out" --date "$started" --commit "$commit" --load-before "$load_before"
