#!/usr/bin/env bash
# Removes what an interrupted test or benchmark run may have left on the
# local services: queues and exchanges named test-… or bench-… on RabbitMQ's
# default vhost, and databases named idv_test_… on PostgreSQL. The tests
# delete their own on the way out; this is for runs that were killed.
set -uo pipefail

if command -v rabbitmqctl >/dev/null 2>&1; then
  for queue in $(rabbitmqctl list_queues -q name 2>/dev/null | grep -E '^(test|bench)-'); do
    rabbitmqctl delete_queue "$queue" >/dev/null 2>&1 && echo "deleted queue $queue"
  done
  for exchange in $(rabbitmqctl list_exchanges -q name 2>/dev/null | grep -E '^(test|bench)-'); do
    rabbitmqctl eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"cleanup\">>)." >/dev/null 2>&1 \
      && echo "deleted exchange $exchange"
  done
fi

pg_url=${IDV_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
if command -v psql >/dev/null 2>&1; then
  for db in $(psql "$pg_url/postgres" -qAtc "select datname from pg_database where datname like 'idv\_test\_%'" 2>/dev/null); do
    psql "$pg_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 && echo "dropped database $db"
  done
fi
exit 0
