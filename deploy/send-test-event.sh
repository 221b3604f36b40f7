#!/usr/bin/env bash
# Signs a Stripe event file the way Stripe does and POSTs it to idv-ingest.
#
#   deploy/send-test-event.sh [EVENT_FILE] [URL]
#
# EVENT_FILE defaults to shared/fixtures/evt_verified.json, URL to
# http://127.0.0.1:4242/webhook. The secret is STRIPE_WEBHOOK_SECRET (the
# first one when several are set), default whsec_test_secret.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
file=${1:-"$here/../shared/fixtures/evt_verified.json"}
url=${2:-http://127.0.0.1:4242/webhook}
secret=${STRIPE_WEBHOOK_SECRET:-whsec_test_secret}
secret=${secret%%,*}

if [ ! -r "$file" ]; then
  echo "send-test-event: cannot read event file $file" >&2
  exit 2
fi

t=$(date +%s)
# HMAC-SHA256 over "{t}.{raw body}", keyed with the whole whsec_ string.
v1=$( { printf '%s.' "$t"; cat "$file"; } | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)

curl -sS -X POST "$url" \
  -H 'Content-Type: application/json' \
  -H "Stripe-Signature: t=$t,v1=$v1" \
  --data-binary "@$file" \
  -w '\nHTTP %{http_code}\n'
