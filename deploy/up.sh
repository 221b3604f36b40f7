#!/usr/bin/env bash
# Brings the whole pipeline up on this machine: installs and starts
# PostgreSQL and RabbitMQ if needed, builds the release binaries, migrates the
# database, declares the AMQP topology, and starts idv-ingest and idv-worker
# in the background (logs and pids in target/run/). Stop them with
# deploy/down.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

ensure_services
ensure_rust

export STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET:-whsec_test_secret}
say "building (release)"
cargo build --release --workspace --bins --quiet

say "migrating the database"
./target/release/idvctl migrate
say "declaring the AMQP topology"
./target/release/idvctl topology

mkdir -p target/run
start() {
  local name=$1
  if [ -f "target/run/$name.pid" ] && kill -0 "$(cat "target/run/$name.pid")" 2>/dev/null; then
    say "$name already running (pid $(cat "target/run/$name.pid"))"
    return 0
  fi
  nohup "./target/release/$name" >"target/run/$name.log" 2>&1 &
  echo $! >"target/run/$name.pid"
  say "started $name (pid $!, log target/run/$name.log)"
}
start idv-ingest
if [ -x ./target/release/idv-worker ]; then
  start idv-worker
fi

# Wait until ingest is ready to take events.
for _ in $(seq 1 60); do
  if curl -fsS http://127.0.0.1:9464/readyz >/dev/null 2>&1; then
    break
  fi
  sleep 0.5
done
if ! curl -fsS http://127.0.0.1:9464/readyz >/dev/null 2>&1; then
  echo "error: idv-ingest is not ready; see target/run/idv-ingest.log" >&2
  exit 1
fi

cat <<MSG

idv-pipeline is up.
  webhook:  http://127.0.0.1:4242/webhook   (secret: $STRIPE_WEBHOOK_SECRET)
  ingest:   http://127.0.0.1:9464/metrics   worker: http://127.0.0.1:9465/metrics

Send a signed test event:
  deploy/send-test-event.sh shared/fixtures/evt_verified.json

Then read the outcome:
  ./target/release/idvctl subject show user_8f14e45fceea

Stop everything with deploy/down.sh.
MSG
