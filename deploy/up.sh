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
ensure_app_login
ensure_rust

default_secret=whsec_test_secret
export STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET:-$default_secret}
# Loopback by default: the test secret is public, and idv-ingest refuses it
# on a listener others can reach. To take real webhooks, put a TLS proxy in
# front and set a real STRIPE_WEBHOOK_SECRET (see README, "Exposing it").
export INGEST_LISTEN=${INGEST_LISTEN:-127.0.0.1:4242}

# `idvctl send-test-event` and `idvctl scenario` sign with
# STRIPE_WEBHOOK_SECRET too, from the shell you run them in. The published
# test secret is kept in target/run/env (beside ensure_app_login's
# DATABASE_URL) while ingest checks it; a secret of your own is never written
# to a file (it is in your environment already), and a test secret kept by an
# earlier run is taken out so that it cannot override yours.
keep_test_secret_for_idvctl() {
  local env_file=target/run/env kept=""
  if [ -f "$env_file" ]; then
    kept=$(grep -v '^export STRIPE_WEBHOOK_SECRET=' "$env_file" || true)
  fi
  if [ "$STRIPE_WEBHOOK_SECRET" = "$default_secret" ]; then
    kept="${kept:+$kept
}export STRIPE_WEBHOOK_SECRET=$default_secret"
  fi
  if [ -n "$kept" ]; then
    write_private_file "$env_file" "$kept"
  else
    rm -f "$env_file"
  fi
}
keep_test_secret_for_idvctl
say "building (release)"
cargo build --release --quiet -p idv-ingest -p idv-worker

say "migrating the database"
./target/release/idvctl migrate
say "declaring the AMQP topology"
./target/release/idvctl topology

mkdir -p target/run
running() {
  [ -f "target/run/$1.pid" ] && kill -0 "$(cat "target/run/$1.pid")" 2>/dev/null
}
start() {
  local name=$1
  if running "$name"; then
    say "$name already running (pid $(cat "target/run/$name.pid"))"
    return 0
  fi
  nohup "./target/release/$name" >"target/run/$name.log" 2>&1 &
  echo $! >"target/run/$name.pid"
  say "started $name (pid $!, log target/run/$name.log)"
}
start idv-ingest
start idv-worker

# Wait until ingest is ready to take events (and has not died trying).
ready=no
for _ in $(seq 1 60); do
  if ! running idv-ingest; then
    break
  fi
  if curl -fsS http://127.0.0.1:9464/readyz >/dev/null 2>&1; then
    ready=yes
    break
  fi
  sleep 0.5
done
if [ "$ready" != yes ]; then
  echo "error: idv-ingest is not ready; see target/run/idv-ingest.log" >&2
  tail -n 5 target/run/idv-ingest.log >&2 || true
  exit 1
fi

if [ "$STRIPE_WEBHOOK_SECRET" = "$default_secret" ]; then
  secret_note="secret: $default_secret"
else
  secret_note="secret: your STRIPE_WEBHOOK_SECRET"
fi
env_note=""
if [ -f target/run/env ]; then
  env_note="
(In a new shell, first: . target/run/env  — what idvctl needs that this run
set up: the local DATABASE_URL with the role idv's password (unless you gave
one) and the published test secret ingest checks; readable by you only.)"
fi
cat <<MSG

idv-pipeline is up.
  webhook:  http://$INGEST_LISTEN/webhook   ($secret_note)
  ingest:   http://127.0.0.1:9464/metrics   worker: http://127.0.0.1:9465/metrics

See it work: a whole story, signed, through ingest to the worker's record,
checked against the rules (also: retry-then-verified, attempts-exhausted,
not-retryable, out-of-order, duplicates, redacted):
  ./target/release/idvctl scenario happy

Send one signed test event (any of the six types), then read the outcome:
  ./target/release/idvctl send-test-event verified --subject user_42
  ./target/release/idvctl subject show user_42
$env_note
Stop everything with deploy/down.sh.
MSG
