#!/usr/bin/env bash
# Stops what deploy/up.sh started: SIGTERM, then up to 30 s for a graceful exit.
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
    if kill -0 "$pid" 2>/dev/null; then
      echo "$name (pid $pid) is still stopping after 30 s; see target/run/$name.log" >&2
      continue
    fi
    echo "stopped $name"
  fi
  rm -f "$pidfile"
done
