#!/bin/bash
# The image's HEALTHCHECK: GET /healthz on the admin listener of the binary
# running as PID 1, with bash's /dev/tcp (the image has no curl). Exit 0 when
# it answers 200 within 2 s, else 1. idvctl (a one-shot job) has no listener
# and is always healthy. An argument names the program instead of PID 1's
# (deploy/check-artefacts.sh tests the script that way).
#
# The address is INGEST_ADMIN_LISTEN (default 127.0.0.1:9464) for
# idv-ingest, WORKER_ADMIN_LISTEN (default 127.0.0.1:9465) for idv-worker;
# a wildcard address (0.0.0.0, [::]) is reached on loopback.
set -u

program=${1:-$(tr '\0' '\n' </proc/1/cmdline 2>/dev/null | head -n 1)}
case ${program##*/} in
  idv-ingest) listen=${INGEST_ADMIN_LISTEN:-127.0.0.1:9464} ;;
  idv-worker) listen=${WORKER_ADMIN_LISTEN:-127.0.0.1:9465} ;;
  *) exit 0 ;;
esac

port=${listen##*:}
host=${listen%:*}
host=${host#[}
host=${host%]}
case $host in
  0.0.0.0 | '' | '*') host=127.0.0.1 ;;
  ::) host=::1 ;;
esac

# Docker wants exit 0 (healthy) or 1 (unhealthy), nothing else: a timeout
# (124) or a refused connection is a 1.
# shellcheck disable=SC2016 # $0 and $1 are expanded by the inner bash
timeout 2 bash -c '
  exec 3<>"/dev/tcp/$0/$1" || exit 1
  printf "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3
  IFS=" " read -r _ status _ <&3
  [ "$status" = 200 ]
' "$host" "$port" || exit 1
