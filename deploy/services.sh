#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ are installed and running on this
# machine (Debian or Ubuntu), installing them from the OS packages when they
# are missing. Sourced by up.sh and test.sh; safe to run again and again.
#
# Exports DATABASE_URL when it had to give the postgres user a password
# (a fresh install refuses password-less TCP logins).

set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_port() {
  local port=$1 name=$2 waited=0
  until port_open "$port"; do
    if [ "$waited" -ge 120 ]; then
      echo "error: $name did not start listening on 127.0.0.1:$port within 120 s" >&2
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

apt_install() {
  if [ -z "${IDV_APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    export IDV_APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

systemd_running() {
  [ -d /run/systemd/system ]
}

ensure_postgres() {
  if port_open 5432; then
    return 0
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    say "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  say "starting PostgreSQL"
  if systemd_running; then
    as_root systemctl start postgresql
  else
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  wait_for_port 5432 PostgreSQL
}

# A fresh PostgreSQL only lets the postgres OS user in through the socket; give
# the postgres role a local password so the services can log in over TCP.
ensure_postgres_login() {
  if [ -n "${DATABASE_URL:-}" ]; then
    return 0
  fi
  if psql "postgres://postgres@127.0.0.1:5432/postgres" -qAtc 'select 1' >/dev/null 2>&1; then
    return 0
  fi
  local password=${IDV_LOCAL_PG_PASSWORD:-idv-local}
  say "setting a local password for the postgres role"
  as_root su postgres -c "psql -qc \"ALTER ROLE postgres PASSWORD '$password'\"" >/dev/null
  export DATABASE_URL="postgres://postgres:$password@127.0.0.1:5432/idv"
  export IDV_TEST_POSTGRES_URL="postgres://postgres:$password@127.0.0.1:5432"
}

ensure_rabbitmq() {
  if port_open 5672; then
    return 0
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    say "installing RabbitMQ"
    apt_install rabbitmq-server
  fi
  say "starting RabbitMQ"
  if systemd_running; then
    as_root systemctl start rabbitmq-server
  else
    as_root rabbitmq-server -detached
  fi
  wait_for_port 5672 RabbitMQ
}

# Rust from rustup: the distributions' cargo is too old for this workspace.
ensure_rust() {
  if command -v cargo >/dev/null 2>&1; then
    return 0
  fi
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    return 0
  fi
  say "installing the Rust toolchain (rustup)"
  apt_install curl ca-certificates build-essential
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
}

ensure_tools() {
  local missing=()
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
  fi
}

ensure_services() {
  ensure_tools
  ensure_postgres
  ensure_postgres_login
  ensure_rabbitmq
}
