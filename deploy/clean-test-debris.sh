#!/usr/bin/env bash
# Removes what an interrupted test or benchmark run may have left on the
# local services: queues and exchanges named test-TAG-… (or bench-…) on
# RabbitMQ's default vhost, and databases named idv_test_TAG_… on
# PostgreSQL. The tests delete their own on the way out; this is for runs
# that were killed.
#
#   deploy/clean-test-debris.sh TAG   # one test run's (deploy/test.sh passes its tag)
#   deploy/clean-test-debris.sh       # every test and bench run's
set -uo pipefail

tag=$(printf '%s' "${1:-}" | tr -cd 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
if [ -n "$tag" ]; then
  amqp_pattern="^test-$tag-"
  db_pattern="idv\\_test\\_${tag}\\_%"
else
  amqp_pattern='^(test|bench)-'
  db_pattern='idv\_test\_%'
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

if command -v rabbitmqctl >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmqctl ]; then
  ctl() { as_root env PATH="$PATH:/usr/sbin" rabbitmqctl "$@"; }
  for queue in $(ctl list_queues -q name 2>/dev/null | grep -E "$amqp_pattern"); do
    ctl delete_queue "$queue" >/dev/null 2>&1 && echo "deleted queue $queue"
  done
  for exchange in $(ctl list_exchanges -q name 2>/dev/null | grep -E "$amqp_pattern"); do
    ctl eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"cleanup\">>)." >/dev/null 2>&1 \
      && echo "deleted exchange $exchange"
  done
fi

if [ -z "${IDV_TEST_POSTGRES_URL:-}" ] && [ -f target/run/env ]; then
  # shellcheck source=/dev/null
  . target/run/env
fi
pg_url=${IDV_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
if command -v psql >/dev/null 2>&1; then
  for db in $(psql -w "$pg_url/postgres" -qAtc "select datname from pg_database where datname like '$db_pattern'" 2>/dev/null); do
    psql -w "$pg_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 && echo "dropped database $db"
  done
fi
exit 0
