#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ are installed and running on this
# machine (Debian or Ubuntu), installing them from the OS packages when they
# are missing, and that Rust is recent enough. Sourced by up.sh, test.sh,
# bench.sh and .ci/run; safe to run again and again, and harmless when
# everything is already running.
#
# PostgreSQL port: DATABASE_URL's when it names this machine, else the local
# cluster's (pg_lsclusters: the newest version's `main`, else the newest
# cluster), else 5432.
#
# PostgreSQL login: when the postgres role cannot log in over TCP without a
# password (a fresh install), and has no password yet, it is given the local
# password `idv-local` (IDV_LOCAL_PG_PASSWORD); an existing password is never
# changed. DATABASE_URL and IDV_TEST_POSTGRES_URL are exported accordingly and
# written to target/run/env for the shell you run idvctl from.

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

# The port in a postgres:// URL, or $2 when it names none.
url_port() {
  local authority=${1#*://}
  authority=${authority%%/*}
  authority=${authority%%\?*}
  authority=${authority##*@}
  if [[ $authority =~ :([0-9]+)$ ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}"
  else
    printf '%s\n' "$2"
  fi
}

# True when a postgres:// URL names this machine over TCP loopback.
url_is_local() {
  local authority=${1#*://}
  authority=${authority%%/*}
  authority=${authority%%\?*}
  authority=${authority##*@}
  case $authority in
    127.0.0.1 | 127.0.0.1:* | localhost | localhost:* | '[::1]' | '[::1]:'*) return 0 ;;
    *) return 1 ;;
  esac
}

# "VERSION NAME PORT" of the local cluster the scripts start and use: the
# one on port $1 when given and there is one, else the newest version's
# `main`, else the newest cluster. Nothing when there is no cluster.
local_cluster() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 0
  pg_lsclusters -h 2>/dev/null | sort -V -k1,1 | awk -v want="${1:-}" '
    { cluster = $1 " " $2 " " $3 }
    want != "" && $3 == want { wanted = cluster }
    $2 == "main" { main = cluster }
    END { print (wanted != "" ? wanted : main != "" ? main : cluster) }'
}

# The port of the PostgreSQL the scripts and the tests use on this machine:
# DATABASE_URL's when it names this machine, else the local cluster's, else 5432.
pg_port() {
  if [ -n "${DATABASE_URL:-}" ] && url_is_local "$DATABASE_URL"; then
    url_port "$DATABASE_URL" 5432
    return 0
  fi
  local cluster
  cluster=$(local_cluster)
  if [ -n "$cluster" ]; then
    printf '%s\n' "${cluster##* }"
  else
    printf '5432\n'
  fi
}

ensure_postgres() {
  local port
  port=$(pg_port)
  if port_open "$port"; then
    return 0
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    say "installing PostgreSQL"
    apt_install postgresql postgresql-client
    # The package may have started it already, on 5432 or, when that is
    # taken, on the next free port.
    sleep 1
    port=$(pg_port)
    if port_open "$port"; then
      return 0
    fi
  fi
  local cluster
  cluster=$(local_cluster "$port")
  if [ -z "$cluster" ]; then
    echo "error: no PostgreSQL cluster on this machine (pg_lsclusters lists none)" >&2
    return 1
  fi
  local version name
  read -r version name _ <<<"$cluster"
  say "starting PostgreSQL $version/$name (port $port)"
  if systemd_running; then
    as_root systemctl start "postgresql@$version-$name"
  else
    # Exit code 2 means "already running": fine.
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start || [ $? -eq 2 ]
  fi
  wait_for_port "$port" PostgreSQL
}

pg_can_login() {
  PGPASSWORD=${2:-} psql -w "$1" -qAtc 'select 1' >/dev/null 2>&1
}

# Exports DATABASE_URL and IDV_TEST_POSTGRES_URL (each unless already set)
# for the local cluster on port $2, logging in as $1 (`user[:password]`).
export_database_urls() {
  local credentials=$1 port=$2
  export DATABASE_URL=${DATABASE_URL:-"postgres://$credentials@127.0.0.1:$port/idv"}
  export IDV_TEST_POSTGRES_URL=${IDV_TEST_POSTGRES_URL:-"postgres://$credentials@127.0.0.1:$port"}
}

ensure_postgres_login() {
  local port
  port=$(pg_port)
  if [ -n "${DATABASE_URL:-}" ]; then
    # Yours to get right; the tests' server defaults to the local cluster.
    export IDV_TEST_POSTGRES_URL=${IDV_TEST_POSTGRES_URL:-"postgres://postgres@127.0.0.1:$port"}
    return 0
  fi
  local password=${IDV_LOCAL_PG_PASSWORD:-idv-local}
  # It goes into SQL, a shell command, URLs and an env file that is sourced:
  # only characters that mean nothing in any of them.
  if ! [[ $password =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "error: IDV_LOCAL_PG_PASSWORD may hold only letters, digits, '.', '_' and '-'" >&2
    return 2
  fi
  if pg_can_login "postgres://postgres@127.0.0.1:$port/postgres"; then
    export_database_urls postgres "$port"
    write_env_file
    return 0
  fi
  if ! pg_can_login "postgres://postgres:$password@127.0.0.1:$port/postgres"; then
    local has_password
    has_password=$(as_root su postgres -c "psql -w -p $port -qAtc \"select rolpassword is not null from pg_authid where rolname = 'postgres'\"")
    if [ "$has_password" = "t" ]; then
      cat >&2 <<MSG
error: PostgreSQL refuses password-less logins for the postgres role, and that
role already has a password (left unchanged). Set DATABASE_URL (and, for the
tests, IDV_TEST_POSTGRES_URL without the database) with its credentials, e.g.
  export DATABASE_URL=postgres://postgres:PASSWORD@127.0.0.1:$port/idv
MSG
      return 1
    fi
    say "giving the postgres role the local password '$password' (it had none)"
    as_root su postgres -c "psql -w -p $port -qc \"ALTER ROLE postgres PASSWORD '$password'\"" >/dev/null
  fi
  export_database_urls "postgres:$password" "$port"
  write_env_file
}

# target/run/env, for a new shell's idvctl: written when the URLs differ from
# the binaries' and the tests' defaults (a password, another port), removed
# when they do not.
write_env_file() {
  if [ "$DATABASE_URL" = "postgres://postgres@127.0.0.1:5432/idv" ] &&
    [ "$IDV_TEST_POSTGRES_URL" = "postgres://postgres@127.0.0.1:5432" ]; then
    rm -f target/run/env
    return 0
  fi
  mkdir -p target/run
  printf 'export DATABASE_URL=%s\nexport IDV_TEST_POSTGRES_URL=%s\n' \
    "$DATABASE_URL" "$IDV_TEST_POSTGRES_URL" >target/run/env
}

ensure_rabbitmq() {
  if port_open 5672; then
    return 0
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
    say "installing RabbitMQ"
    apt_install rabbitmq-server
    sleep 1
    if port_open 5672; then
      return 0
    fi
  fi
  say "starting RabbitMQ"
  if systemd_running; then
    as_root systemctl start rabbitmq-server
  else
    as_root rabbitmq-server -detached
  fi
  wait_for_port 5672 RabbitMQ
}

# The workspace needs Rust 1.92 or newer (edition 2024); distributions ship
# older ones, so rustup provides it when needed.
rust_recent_enough() {
  local minor
  minor=$(cargo --version 2>/dev/null | sed -n 's/^cargo 1\.\([0-9]*\).*/\1/p')
  [ -n "$minor" ] && [ "$minor" -ge 92 ]
}

ensure_rust() {
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if rust_recent_enough; then
    return 0
  fi
  say "installing the Rust toolchain (rustup)"
  apt_install curl ca-certificates build-essential
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
  "$HOME/.cargo/bin/rustup" update stable
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

# A test run's tag as every name it creates carries it (the same rule as
# run_tag() in tests/src/lib.rs): lowercase letters and digits only, at most
# 16 of them.
normalise_run_tag() {
  printf '%s' "$1" | LC_ALL=C tr 'A-Z' 'a-z' | LC_ALL=C tr -cd 'a-z0-9' | cut -c1-16
}

ensure_services() {
  ensure_tools
  ensure_postgres
  ensure_postgres_login
  ensure_rabbitmq
}
