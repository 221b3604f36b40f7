#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL and RabbitMQ, starting
# (and on a fresh machine installing) them first when they are not running.
#
#   deploy/test.sh                  # everything
#   deploy/test.sh --test ingest    # arguments go to `cargo test --workspace`
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

ensure_services
ensure_test_login
ensure_rust

# The Prometheus server tests/tests/prometheus_scrape.rs runs: one on PATH
# (or IDV_PROMETHEUS_BIN) when there is one, else Debian's package unpacked
# into the tools cache (services.sh), as deploy/check-artefacts.sh does.
if [ -z "${IDV_PROMETHEUS_BIN:-}" ] && ! command -v prometheus >/dev/null 2>&1; then
  ensure_prometheus_package
  export IDV_PROMETHEUS_BIN=$prometheus_root/usr/bin/prometheus
fi

# Every queue and database this run creates carries its tag; whatever a
# killed test leaves behind is removed on the way out, and only that. The
# tag is already in its final form (normalise_run_tag), so the tests, the
# clean-up and this script name the same things: by default `r`, the last
# six digits of the time and the pid (at most 14 characters).
IDV_TEST_RUN=$(normalise_run_tag "${IDV_TEST_RUN:-$(printf 'r%06d%d' $(($(date +%s) % 1000000)) $$)}")
if [ -z "$IDV_TEST_RUN" ]; then
  echo "error: IDV_TEST_RUN has no letters or digits" >&2
  exit 2
fi
export IDV_TEST_RUN
say "test run $IDV_TEST_RUN (its debris: deploy/clean-test-debris.sh $IDV_TEST_RUN)"
trap 'bash deploy/clean-test-debris.sh "$IDV_TEST_RUN"' EXIT

if [ "$#" -eq 0 ]; then
  set -- --all-targets
fi
cargo test --workspace "$@"
