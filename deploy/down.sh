#!/usr/bin/env bash
# Stops what deploy/up.sh started (gracefully: SIGTERM, then waits).
set -euo pipefail
cd "$(dirname "$0")/.."
for name in idv-worker idv-ingest; do
  pidfile="target/run/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    echo "stopped $name"
  fi
  rm -f "$pidfile"
done
