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
ensure_rust

# Every queue and database this run creates carries its tag; whatever a
# killed test leaves behind is removed on the way out, and only that.
export IDV_TEST_RUN=${IDV_TEST_RUN:-r$(date +%s)$$}
trap 'bash deploy/clean-test-debris.sh "$IDV_TEST_RUN"' EXIT

if [ "$#" -eq 0 ]; then
  set -- --all-targets
fi
cargo test --workspace "$@"
