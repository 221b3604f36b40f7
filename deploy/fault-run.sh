#!/usr/bin/env bash
# The fault run alone (tests/tests/fault_run.rs): the real idv-ingest, two
# idv-workers and the dispatcher under a Stripe-like load while the broker,
# PostgreSQL, the workers and the dispatcher are broken on a schedule; then
# the audit and the ledger. It brings up a RabbitMQ node and a PostgreSQL
# of its own (deploy/rabbitmq-cluster.sh, initdb as the postgres user, so
# run it as root or with sudo) and takes both down even when it fails; the
# machine's own broker and database are never touched.
#
#   deploy/fault-run.sh                              # about 3 minutes
#   IDV_FAULT_SECS=600 deploy/fault-run.sh           # a soak: the faults repeat for 10 minutes
#   IDV_FAULT_SEED=1234 deploy/fault-run.sh          # the same stories and plan as a printed run
#
# Also: IDV_FAULT_SUBJECTS (420), IDV_FAULT_PG_PORT (5491), IDV_FAULT_AMQP_PORT (5691).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh
ensure_rust
IDV_TEST_RUN=$(normalise_run_tag "${IDV_TEST_RUN:-fault$$}")
export IDV_TEST_RUN
exec cargo test -p idv-tests --test fault_run --locked -- --nocapture "$@"
