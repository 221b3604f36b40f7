#!/usr/bin/env bash
# Hostile input at volume against the release idv-ingest: the good stream
# alone (the baseline), then the whole hostile corpus (11,100 requests in
# 23 families) sent while the good stream goes on, then the queues read
# back. Prints a table per family and the good stream's p50/p99 alone and
# under attack; exits 1 if a bad request was not refused, anything of the
# corpus was published, or a good event was not answered 200 and queued
# exactly once. Arguments go to hostile_ingest (--help lists them).
# Its queues carry the run's tag and are removed at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

ensure_services
ensure_rust

IDV_TEST_RUN=$(normalise_run_tag "${IDV_TEST_RUN:-$(printf 'h%06d%d' $(($(date +%s) % 1000000)) $$)}")
export IDV_TEST_RUN
trap 'bash deploy/clean-test-debris.sh "$IDV_TEST_RUN"' EXIT

cargo build --release --quiet --locked -p idv-ingest -p idv-tests --bin idv-ingest --bin hostile_ingest
./target/release/hostile_ingest "$@"
