#!/usr/bin/env bash
# Runs the whole test suite against a real PostgreSQL and RabbitMQ, starting
# (and on a fresh machine installing) them first when they are not running.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

ensure_services
ensure_rust

cargo test --workspace --all-targets "$@"
