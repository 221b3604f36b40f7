#!/usr/bin/env bash
# A RabbitMQ cluster of N nodes of the installed server on this one machine,
# without containers: for the cluster test (tests/tests/rabbitmq_cluster.rs),
# the publish-ceiling comparison (deploy/bench-cluster.sh) and anyone who
# wants to see quorum queues lose a node.
#
#   deploy/rabbitmq-cluster.sh up [--nodes N] [--prefix P] [--base-port PORT]
#   deploy/rabbitmq-cluster.sh down [--prefix P]
#   deploy/rabbitmq-cluster.sh stop-node K [--kill] [--prefix P]
#   deploy/rabbitmq-cluster.sh start-node K [--prefix P]
#   deploy/rabbitmq-cluster.sh status [--prefix P]
#   deploy/rabbitmq-cluster.sh ctl|queues K [--prefix P] -- ARGS...
#
# Defaults: 3 nodes, prefix idv-cluster, AMQP ports from 5681. Node K is
# P-K@localhost, listening for AMQP on 127.0.0.1:(PORT+K-1) and for Erlang
# distribution on PORT+K-1+20000; management and every other plugin are
# off. Data, logs and the per-node configuration live under the state
# directory, IDV_CLUSTER_STATE (default target/rabbitmq-cluster) / P.
# Nodes 2..N join node 1 (stop_app, reset, join_cluster, start_app).
#
# `up` prints the nodes' AMQP URLs as one comma-separated line on stdout
# (everything else goes to stderr), ready for AMQP_URL, and keeps it in
# <state dir>/amqp_url:   export AMQP_URL=$(deploy/rabbitmq-cluster.sh up)
# `down` stops every node of the prefix and deletes its state directory;
# it is safe when nothing is up. An `up` that fails or is interrupted
# (INT, TERM, HUP) takes down what it started. `stop-node K` shuts node K
# down cleanly (its Erlang VM exits); `stop-node K --kill` SIGKILLs the
# VM instead, an abrupt death as when a machine is lost (its TCP peers
# still see the kernel close the sockets: a partition, where nothing at all
# comes back, cannot be made on one machine this way); `start-node K`
# starts it again and it rejoins the cluster from its own data. `ctl K -- ARGS` and
# `queues K -- ARGS` run rabbitmqctl or rabbitmq-queues ARGS against node K
# (with the node's cookie): `ctl 1 -- list_queues name leader members`.
#
# The machine's own broker (rabbit@<host> on 5672) is never touched: the
# prefix `rabbit` and any node port of 5672 are refused, every command
# names its node, and the system's rabbitmq-env.conf and rabbitmq.conf are
# not read. Each state directory gets an Erlang cookie of its own, never
# the machine broker's, so the nodes are no trusted peers of rabbit@<host>;
# every rabbitmqctl and rabbitmq-queues call here uses it (HOME=<state dir>).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/services.sh
source deploy/services.sh

usage() {
  sed -n '7,12p' "$0" | sed 's/^# *//' >&2
  exit 2
}

prefix=idv-cluster
nodes=3
base_port=5681
node_arg=
kill_node=false

command=${1:-}
[ -n "$command" ] || usage
shift
case $command in
  stop-node | start-node | ctl | queues)
    node_arg=${1:-}
    [ -n "$node_arg" ] || usage
    shift
    ;;
esac
tool_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; tool_args=("$@"); break ;;
    --nodes) nodes=${2:-}; shift 2 || usage ;;
    --prefix) prefix=${2:-}; shift 2 || usage ;;
    --base-port) base_port=${2:-}; shift 2 || usage ;;
    --kill) kill_node=true; shift ;;
    *) echo "rabbitmq-cluster: unknown argument $1" >&2; usage ;;
  esac
done

fail() {
  echo "rabbitmq-cluster: $*" >&2
  exit 1
}

[[ $prefix =~ ^[a-z][a-z0-9-]{0,30}$ ]] || fail "--prefix: expected lowercase letters, digits and '-', starting with a letter, found '$prefix'"
[ "$prefix" != rabbit ] || fail "--prefix rabbit is the machine's own broker's node name; choose another"
[[ $nodes =~ ^[1-9]$ ]] || fail "--nodes: expected 1 to 9, found '$nodes'"
if ! [[ $base_port =~ ^[0-9]+$ ]] || [ "$base_port" -lt 1024 ] || [ "$base_port" -gt 45000 ]; then
  fail "--base-port: expected a port from 1024 to 45000, found '$base_port'"
fi

state_root=${IDV_CLUSTER_STATE:-$PWD/target/rabbitmq-cluster}
state=$state_root/$prefix

# The server's own scripts, not Debian's /usr/sbin wrappers: those switch
# to the rabbitmq user, who may not write to the state directory.
rabbitmq_bin() {
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo /usr/lib/rabbitmq/bin
  elif command -v rabbitmq-server >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v rabbitmq-server)")"
  else
    return 1
  fi
}

ensure_installed() {
  if bin=$(rabbitmq_bin); then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 ||
    fail "rabbitmq-server is not installed and there is no apt-get here: install RabbitMQ 3.10 or newer (https://www.rabbitmq.com/download.html)"
  say "rabbitmq-server is not installed: installing it from the OS packages (apt-get install rabbitmq-server)"
  apt_install rabbitmq-server
  bin=$(rabbitmq_bin) || fail "rabbitmq-server is still missing after apt-get install rabbitmq-server"
}

node_name() { echo "$prefix-$1@localhost"; }
node_dir() { echo "$state/node-$1"; }
amqp_port() { echo $((base_port + $1 - 1)); }

# The saved shape of a cluster that is up, for the commands after `up`.
load_state() {
  [ -f "$state/cluster.env" ] || fail "no cluster with prefix $prefix is up (no $state/cluster.env); run: deploy/rabbitmq-cluster.sh up --prefix $prefix"
  # shellcheck source=/dev/null
  source "$state/cluster.env"
}

# Every variable a node and the CLI tools read, pointing at node $1's own
# files; the system's rabbitmq-env.conf is replaced by the node's own.
node_env() {
  local k=$1 dir port
  dir=$(node_dir "$k")
  port=$(amqp_port "$k")
  export HOME=$state # the Erlang cookie, for the node and for rabbitmqctl
  export RABBITMQ_NODENAME
  RABBITMQ_NODENAME=$(node_name "$k")
  export RABBITMQ_USE_LONGNAME=false
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$port
  export RABBITMQ_DIST_PORT=$((port + 20000))
  export RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf
  export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
  export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
  export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
  export RABBITMQ_MNESIA_BASE=$dir/mnesia
  export RABBITMQ_MNESIA_DIR=$dir/mnesia/$RABBITMQ_NODENAME
  export RABBITMQ_LOG_BASE=$dir/log
  export RABBITMQ_PID_FILE=$dir/pid
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ctl() {
  local k=$1
  shift
  (node_env "$k" && "$bin/rabbitmqctl" -q -n "$(node_name "$k")" "$@")
}

write_node_files() {
  local k=$1 dir
  dir=$(node_dir "$k")
  mkdir -p "$dir/mnesia" "$dir/log"
  : >"$dir/rabbitmq-env.conf"
  echo '[].' >"$dir/enabled_plugins"
  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$k")
# Several nodes share one machine (and its disk and memory) with other
# services: alarms at the defaults would block publishers for no reason.
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.relative = 0.8
log.file.level = info
log.console = false
EOF
}

# A fresh cookie per state directory: a copy of the machine broker's would
# make rabbit@<host> and these nodes trusted peers of each other.
write_cookie() {
  local cookie=$state/.erlang.cookie
  [ -f "$cookie" ] && return 0
  head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' >"$cookie"
  chmod 400 "$cookie"
}

# Starts node $1 in the background and waits until it serves.
start_node() {
  local k=$1 port
  port=$(amqp_port "$k")
  if ctl "$k" status >/dev/null 2>&1; then
    say "$(node_name "$k") is already running"
    return 0
  fi
  port_open "$port" && fail "port $port (node $k's AMQP port) is already taken by something else"
  # A killed VM leaves its pid file: `await_node` would read the dead pid.
  rm -f "$(node_dir "$k")/pid"
  (node_env "$k" && cd "$(node_dir "$k")" && "$bin/rabbitmq-server" -detached >>"$(node_dir "$k")/log/startup.log" 2>&1) ||
    fail "$(node_name "$k") did not start; see $(node_dir "$k")/log"
}

await_node() {
  local k=$1
  # `wait` (not await_startup) also covers the moments before the new VM
  # has registered its name: it waits for the pid file first.
  ctl "$k" wait "$(node_dir "$k")/pid" --timeout 120 >/dev/null ||
    fail "$(node_name "$k") did not finish starting within 120 s; see $(node_dir "$k")/log"
}

running_count() {
  ctl "$1" eval 'length(rabbit_nodes:all_running()).' 2>/dev/null || echo 0
}

await_cluster() {
  local k=$1 waited=0
  until [ "$(running_count "$k")" = "$nodes" ]; do
    [ "$waited" -lt 120 ] || fail "cluster_status did not show all $nodes nodes running within 60 s"
    sleep 0.5
    waited=$((waited + 1))
  done
}

amqp_urls() {
  local k urls=
  for k in $(seq 1 "$nodes"); do
    urls+="${urls:+,}amqp://guest:guest@127.0.0.1:$(amqp_port "$k")/%2f"
  done
  echo "$urls"
}

cmd_up() {
  ensure_installed
  if [ -f "$state/cluster.env" ]; then
    fail "a cluster with prefix $prefix is already set up in $state; run: deploy/rabbitmq-cluster.sh down --prefix $prefix"
  fi
  local k port step
  for k in $(seq 1 "$nodes"); do
    port=$(amqp_port "$k")
    if [ "$port" -eq 5672 ]; then
      fail "--base-port $base_port would put node $k on the machine's own broker's port 5672"
    fi
  done
  mkdir -p "$state"
  # From here on a failure, or an interrupted run, takes down what this
  # run started (a SIGKILLed run leaves it for clean-test-debris.sh).
  trap 'cmd_down' EXIT
  trap 'exit 1' INT TERM HUP
  printf 'nodes=%s\nbase_port=%s\n' "$nodes" "$base_port" >"$state/cluster.env"
  write_cookie
  say "starting $nodes RabbitMQ node(s) $prefix-1..$nodes@localhost on ports $base_port..$(amqp_port "$nodes") (state in $state)"
  for k in $(seq 1 "$nodes"); do
    write_node_files "$k"
    start_node "$k"
  done
  for k in $(seq 1 "$nodes"); do
    await_node "$k"
  done
  for k in $(seq 2 "$nodes"); do
    say "joining $(node_name "$k") to $(node_name 1)"
    for step in stop_app reset "join_cluster $(node_name 1)" start_app; do
      # The CLI's warnings while a node changes clusters are noise, unless
      # the step fails.
      # shellcheck disable=SC2086 # the step is a command and its argument
      ctl "$k" $step >"$state/step.log" 2>&1 || {
        cat "$state/step.log" >&2
        fail "$step on $(node_name "$k") failed"
      }
    done
  done
  await_cluster 1
  say "cluster of $nodes running: $(ctl 1 eval 'rabbit_nodes:all_running().')"
  amqp_urls >"$state/amqp_url"
  trap - EXIT INT TERM HUP
  amqp_urls
}

# The pid of node $1's Erlang VM from the pid file it wrote, printed only
# if that process is still it (its environment names the node, as
# node_env set it; the VM's command line does not); fails otherwise.
node_vm_pid() {
  local pid_file pid
  pid_file=$(node_dir "$1")/pid
  [ -f "$pid_file" ] || return 1
  pid=$(cat "$pid_file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF -- "RABBITMQ_NODENAME=$(node_name "$1")" || return 1
  echo "$pid"
}

# Waits up to $2 tenths of a second for process $1 to be gone.
await_exit() {
  local pid=$1 tenths=$2
  while [ -d "/proc/$pid" ] && [ "$tenths" -gt 0 ]; do
    sleep 0.1
    tenths=$((tenths - 1))
  done
  [ ! -d "/proc/$pid" ]
}

# SIGKILLs node $1's VM (an abrupt death) and waits until it is gone.
kill_node_vm() {
  local pid
  pid=$(node_vm_pid "$1") || fail "$(node_name "$1") is not running (no live VM of its in $(node_dir "$1")/pid)"
  kill -KILL "$pid" 2>/dev/null || true
  await_exit "$pid" 100 || fail "$(node_name "$1") (pid $pid) still exists 10 s after SIGKILL"
}

# Shuts node $1 down (its VM exits); a node that is not running is left be.
shutdown_node() {
  local k=$1 pid
  if ctl "$k" shutdown >/dev/null 2>&1; then
    return 0
  fi
  # Not answering: end its VM by the pid it wrote, if that is still it,
  # and SIGKILL it if TERM has not ended it within 10 s.
  pid=$(node_vm_pid "$k") || return 0
  kill "$pid" 2>/dev/null || true
  await_exit "$pid" 100 && return 0
  say "$(node_name "$k") (pid $pid) did not exit within 10 s of SIGTERM: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  await_exit "$pid" 50 || say "$(node_name "$k") (pid $pid) still exists after SIGKILL"
}

cmd_down() {
  if [ ! -d "$state" ]; then
    say "no cluster with prefix $prefix ($state does not exist)"
    return 0
  fi
  bin=$(rabbitmq_bin) || true
  if [ -f "$state/cluster.env" ]; then
    # shellcheck source=/dev/null
    source "$state/cluster.env"
  fi
  local k dir
  for dir in "$state"/node-*; do
    if [ ! -d "$dir" ] || [ -z "${bin:-}" ]; then continue; fi
    k=${dir##*/node-}
    shutdown_node "$k" &
  done
  wait
  rm -rf "$state"
  say "cluster $prefix is down and $state removed"
}

check_node_arg() {
  if ! [[ $node_arg =~ ^[0-9]+$ ]] || [ "$node_arg" -lt 1 ] || [ "$node_arg" -gt "$nodes" ]; then
    fail "expected a node number from 1 to $nodes, found '$node_arg'"
  fi
}

cmd_stop_node() {
  load_state
  check_node_arg
  bin=$(rabbitmq_bin) || fail "rabbitmq-server is not installed"
  if [ "$kill_node" = true ]; then
    kill_node_vm "$node_arg"
    say "$(node_name "$node_arg") killed (SIGKILL)"
  else
    shutdown_node "$node_arg"
    say "$(node_name "$node_arg") stopped"
  fi
}

cmd_start_node() {
  load_state
  check_node_arg
  bin=$(rabbitmq_bin) || fail "rabbitmq-server is not installed"
  start_node "$node_arg"
  await_node "$node_arg"
  say "$(node_name "$node_arg") running"
}

cmd_status() {
  load_state
  bin=$(rabbitmq_bin) || fail "rabbitmq-server is not installed"
  local k
  for k in $(seq 1 "$nodes"); do
    if ctl "$k" status >/dev/null 2>&1; then
      echo "$(node_name "$k") amqp://127.0.0.1:$(amqp_port "$k") running, sees $(running_count "$k") of $nodes running"
    else
      echo "$(node_name "$k") amqp://127.0.0.1:$(amqp_port "$k") stopped"
    fi
  done
  amqp_urls
}

# rabbitmqctl or rabbitmq-queues ($1) against node $node_arg.
cmd_tool() {
  load_state
  check_node_arg
  bin=$(rabbitmq_bin) || fail "rabbitmq-server is not installed"
  (node_env "$node_arg" && "$bin/$1" -q -n "$(node_name "$node_arg")" "${tool_args[@]}")
}

case $command in
  up) cmd_up ;;
  ctl) cmd_tool rabbitmqctl ;;
  queues) cmd_tool rabbitmq-queues ;;
  down) cmd_down ;;
  stop-node) cmd_stop_node ;;
  start-node) cmd_start_node ;;
  status) cmd_status ;;
  -h | --help | help) usage ;;
  *) echo "rabbitmq-cluster: unknown command $command" >&2; usage ;;
esac
