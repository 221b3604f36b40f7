#!/usr/bin/env bash
# Runs the benchmarks (release build) against the local PostgreSQL and
# RabbitMQ, each next to the ceiling it is measured against in the same run:
#   - bench_ingest: idv-ingest vs the broker's confirmed-publish ceiling;
#   - bench_worker: end-to-end events/s with 1 and 2 workers vs PostgreSQL's
#     transaction ceiling.
# Everything they create is removed at the end. Run on an idle machine.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

ensure_services
ensure_test_login
ensure_rust

cargo build --release --quiet -p idv-ingest -p idv-worker -p idv-tests --bins
echo "== ingest =="
./target/release/bench_ingest "$@"
echo
echo "== worker =="
./target/release/bench_worker
