#!/usr/bin/env bash
# The cost of replication, measured: the broker's pipelined, confirmed,
# persistent publish ceiling into the idv.events quorum queue on a
# three-node cluster and on a single node, both started by
# deploy/rabbitmq-cluster.sh from this machine's RabbitMQ server in the same
# run (same server, same configuration), one after the other.
#
#   deploy/bench-cluster.sh [--seconds N] [--broker-in-flight N]
#
# Prints each ceiling and their ratio. Each cluster is taken down after its
# measurement (and on the way out, whatever happens). The publisher
# connects to node 1, where the queue is declared and so led: a publish
# waits for a majority of the replicas (2 of 3) to write it. Run it on an
# idle machine: the nodes, the publisher and the disk share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

seconds=10
in_flight=256
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=${2:-}; shift 2 ;;
    --broker-in-flight) in_flight=${2:-}; shift 2 ;;
    *) echo "usage: deploy/bench-cluster.sh [--seconds N] [--broker-in-flight N]" >&2; exit 2 ;;
  esac
done

ensure_rust
cargo build --release --quiet -p idv-tests --bin bench_broker

cleanup() {
  deploy/rabbitmq-cluster.sh down --prefix idv-bench3 >/dev/null 2>&1 || true
  deploy/rabbitmq-cluster.sh down --prefix idv-bench1 >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The ceiling on a fresh cluster of $1 nodes (prefix $2, first port $3).
ceiling() {
  local nodes=$1 prefix=$2 port=$3 urls first rate
  deploy/rabbitmq-cluster.sh down --prefix "$prefix" >/dev/null 2>&1 || true
  urls=$(deploy/rabbitmq-cluster.sh up --nodes "$nodes" --prefix "$prefix" --base-port "$port")
  first=${urls%%,*}
  say "measuring $nodes node(s) for $seconds s"
  rate=$(./target/release/bench_broker --seconds "$seconds" \
    --in-flight "$in_flight" --amqp-url "$first" | sed -n 's/^broker ceiling: \([0-9]*\) msg\/s$/\1/p')
  deploy/rabbitmq-cluster.sh down --prefix "$prefix" >/dev/null
  [ -n "$rate" ] || { echo "bench-cluster: no ceiling measured on $nodes node(s)" >&2; exit 1; }
  echo "$rate"
}

single=$(ceiling 1 idv-bench1 5711)
three=$(ceiling 3 idv-bench3 5701)
echo "single node:        $single msg/s"
echo "three-node cluster: $three msg/s"
awk -v t="$three" -v s="$single" 'BEGIN { printf "three nodes / one:  %.2f\n", t / s }'
