#!/usr/bin/env bash
# Removes what an interrupted test or benchmark run may have left on the
# local services: queues, exchanges and policies named test-TAG-… (or bench-…) on
# RabbitMQ's default vhost, and databases named idv_test_TAG_… on
# PostgreSQL; and the private servers such a run started under target/:
# the cluster test's RabbitMQ nodes (target/rabbitmq-cluster/idvt-TAG-…,
# through deploy/rabbitmq-cluster.sh down) and the fault run's RabbitMQ
# node and PostgreSQL (target/fault-run/TAG<6 hex>/, stopped and deleted).
# The tests delete their own on the way out; this is for runs that were
# killed.
#
#   deploy/clean-test-debris.sh TAG     # one test run's (deploy/test.sh passes its tag)
#   deploy/clean-test-debris.sh --all   # every test and bench run's, running ones too
#
# TAG is normalised by the rule the tests and deploy/test.sh use
# (normalise_run_tag in deploy/services.sh: lowercase letters and digits, at
# most 16), so a raw IDV_TEST_RUN finds what the tests named with it.
# Names found are passed as data: only names of letters, digits, `.`, `_`
# and `-` are touched, and SQL identifiers are quoted.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh
set +e # best effort: one failure does not stop the rest

export LC_ALL=C # the name patterns below mean ASCII, whatever the locale
if [ -z "${1:-}" ]; then
  echo "usage: deploy/clean-test-debris.sh TAG | --all (every run's debris, running runs' too)" >&2
  exit 2
elif [ "$1" != "--all" ]; then
  tag=$(normalise_run_tag "$1")
  if [ -z "$tag" ]; then
    echo "clean-test-debris: tag $1 has no letters or digits" >&2
    exit 2
  fi
  amqp_pattern="^test-$tag-[A-Za-z0-9._-]*\$"
  db_pattern="idv\\_test\\_${tag}\\_%"
  # tests/src/cluster.rs: prefix idvt-<tag>-<label>; tests/tests/fault_run.rs:
  # target/fault-run/<tag><6 hex of a uuid>.
  cluster_glob="idvt-$tag-*"
  fault_glob="${tag}[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]"
else
  amqp_pattern='^(test|bench)-[A-Za-z0-9._-]*$'
  db_pattern='idv\_test\_%'
  cluster_glob='idvt-*'
  fault_glob='*'
fi

# Never prompts for a password (this runs on the way out of CI).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

if command -v rabbitmqctl >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmqctl ]; then
  ctl() { as_root env PATH="$PATH:/usr/sbin" rabbitmqctl "$@"; }
  ctl list_queues -q name 2>/dev/null | grep -E "$amqp_pattern" | while IFS= read -r queue; do
    ctl delete_queue "$queue" </dev/null >/dev/null 2>&1 && echo "deleted queue $queue"
  done
  # Policies a test set on its queues (named after its prefix); names are
  # passed to clear_policy as an argument, never into code.
  ctl list_policies -q -p / --no-table-headers 2>/dev/null | cut -f2 | grep -E "$amqp_pattern" |
    while IFS= read -r policy; do
      ctl clear_policy -p / "$policy" </dev/null >/dev/null 2>&1 && echo "cleared policy $policy"
    done
  # rabbitmqctl cannot delete an exchange; the name goes into Erlang code,
  # which the pattern above keeps to characters that cannot end the binary.
  ctl list_exchanges -q name 2>/dev/null | grep -E "$amqp_pattern" | while IFS= read -r exchange; do
    ctl eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"cleanup\">>)." </dev/null >/dev/null 2>&1 \
      && echo "deleted exchange $exchange"
  done
fi

# The tests' credentials: deploy/test.sh exports them; run by hand, the
# file ensure_test_login (deploy/services.sh) keeps them in.
if [ -z "${IDV_TEST_POSTGRES_URL:-}" ] && [ -r target/run/test-env ]; then
  # shellcheck source=/dev/null
  . target/run/test-env
fi
pg_url=${IDV_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:$(pg_port)}
if command -v psql >/dev/null 2>&1; then
  psql -w "$pg_url/postgres" -qAt -v pattern="$db_pattern" 2>/dev/null <<'SQL' |
select datname from pg_database where datname like :'pattern'
SQL
    while IFS= read -r db; do
      psql -w "$pg_url/postgres" -q -v db="$db" >/dev/null 2>&1 <<'SQL' && echo "dropped database $db"
DROP DATABASE IF EXISTS :"db" WITH (FORCE)
SQL
    done
fi

# Private servers under target/ (never the shared ones: only nodes named
# after a state directory found here, and PostgreSQL data directories
# under target/fault-run). rabbitmq-cluster.sh down stops a prefix's nodes
# and deletes its state directory.
cluster_down() { # state root, prefix
  IDV_CLUSTER_STATE=$1 bash deploy/rabbitmq-cluster.sh down --prefix "$2" 2>&1 |
    sed 's/^==> /clean-test-debris: /'
}
for dir in target/rabbitmq-cluster/$cluster_glob; do
  [ -d "$dir" ] && cluster_down "$PWD/target/rabbitmq-cluster" "${dir##*/}"
done
pg_bin=${IDV_FAULT_PG_BIN:-/usr/lib/postgresql/15/bin}
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi
}
for dir in target/fault-run/$fault_glob; do
  [ -d "$dir" ] || continue
  # tests/src/fault/private_rabbit.rs: prefix idv-fault under <dir>/rabbit.
  [ -d "$dir/rabbit/idv-fault" ] && cluster_down "$PWD/$dir/rabbit" idv-fault
  # tests/src/fault/private_pg.rs: data in <dir>/pg/data, run as postgres.
  if [ -f "$dir/pg/data/postmaster.pid" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$PWD/$dir/pg/data" stop -m immediate -w -t 60 >/dev/null 2>&1 &&
      echo "stopped the fault run's PostgreSQL in $dir/pg"
  fi
  rm -rf "$dir" && echo "removed $dir"
done
exit 0
