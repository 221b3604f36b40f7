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
# PostgreSQL logins (the postgres role's password is never set or changed):
#   - ensure_app_login (up.sh): unless DATABASE_URL is set, the role `idv`,
#     no superuser, with a random password, owning the database `idv`;
#     DATABASE_URL is exported and kept in target/run/env (mode 600) for the
#     shell you run idvctl from.
#   - ensure_test_login (test.sh, bench.sh): unless IDV_TEST_POSTGRES_URL is
#     set, the postgres role when it logs in over TCP without a password,
#     else the role `idv_test` (CREATEDB, no superuser) with a random password
#     of its own; kept in target/run/test-env (mode 600).

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

# True when the URL ($1) logs in, with no password but the URL's own (no
# ~/.pgpass, no PGPASSWORD: the binaries and the tests read neither).
pg_can_login() {
  env -u PGPASSWORD PGPASSFILE=/nonexistent/.pgpass psql -X -w "$1" -qAtc 'select 1' >/dev/null 2>&1
}

# True when the postgres role logs in over TCP on port $1 without a password
# (trust, as on CI; not on a fresh install, where it needs one and has none).
pg_postgres_trusted() {
  pg_can_login "postgres://postgres@127.0.0.1:$1/postgres"
}

# psql as a superuser on the local cluster on port $1 (further arguments go
# to psql; SQL on stdin, stops at the first error): the postgres role over
# TCP when that needs no password, else as the postgres OS user through the
# local socket (peer), through sudo when not root.
pg_superuser_psql() {
  local port=$1
  shift
  if pg_postgres_trusted "$port"; then
    env -u PGPASSWORD PGPASSFILE=/nonexistent/.pgpass \
      psql -X -w -q -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$port/postgres" "$@"
  else
    # From /, which the postgres user can read, whatever the cwd is.
    (cd / && as_root runuser -u postgres -- psql -X -w -q -v ON_ERROR_STOP=1 -p "$port" -d postgres "$@")
  fi
}

# 48 random hex digits: nothing to quote in SQL, a URL or a sourced file.
random_password() {
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex 24
  else
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'
    echo
  fi
}

# Writes $2 to the file $1 (and a newline), readable and writable only by
# its owner (600) from the first byte: a new file, then renamed over the old.
write_private_file() {
  local file=$1 content=$2 tmp
  mkdir -p "$(dirname "$file")"
  tmp=$(umask 077 && mktemp "$file.XXXXXX")
  if ! printf '%s\n' "$content" >"$tmp" || ! chmod 600 "$tmp" || ! mv -f "$tmp" "$file"; then
    rm -f "$tmp"
    echo "error: could not write $file" >&2
    return 1
  fi
}

# The password in an env file ($1) written by the functions below, whose
# line for the variable $2 is `export $2=postgres://$3:PASSWORD@127.0.0.1:…`;
# nothing when there is no such file or line.
saved_password() {
  [ -r "$1" ] || return 0
  sed -n "s|^export $2=postgres://$3:\\([0-9a-f]\\{16,\\}\\)@127\\.0\\.0\\.1:[0-9]*\\(/.*\\)\\{0,1\\}\$|\\1|p" "$1" | head -n 1
}

# Earlier versions of these scripts gave the postgres superuser the published
# password `idv-local`; say so when it still has it (it is not changed here).
warn_published_postgres_password() {
  local port=$1
  if ! pg_postgres_trusted "$port" &&
    pg_can_login "postgres://postgres:idv-local@127.0.0.1:$port/postgres"; then
    cat >&2 <<MSG
warning: the postgres role still has the password 'idv-local' that earlier
versions of these scripts gave it, and anyone who knows them knows it. Nothing
here needs it any more; remove it with
  sudo -u postgres psql -p $port -c 'ALTER ROLE postgres PASSWORD NULL'
MSG
  fi
}

# Ensures the role $2 (attributes $3) on the local cluster on port $1 and
# gives it the password $4. The password goes to psql on stdin as a psql
# variable (not on a command line, where ps shows it, nor spliced into SQL by
# this script), and this session's statements are kept out of the server log.
pg_ensure_role() {
  local port=$1 role=$2 attributes=$3 password=$4
  {
    printf '\\set pw %s\n' "$password"
    cat <<'SQL'
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') AS role_missing \gset
\if :role_missing
CREATE ROLE :"role";
\endif
ALTER ROLE :"role" WITH :attributes PASSWORD :'pw';
SQL
  } | pg_superuser_psql "$port" -v role="$role" -v attributes="$attributes" >/dev/null
}

# The application's login: DATABASE_URL, unless you set it, is the role `idv`
# (LOGIN, not a superuser, cannot create databases or roles) with a random
# password, on the database `idv`, which it owns, on the local cluster
# (pg_port). The URL is kept in target/run/env (mode 600) and reused while it
# logs in and owns `idv`; otherwise a new password is set. An `idv`
# database left by earlier versions (owned by postgres) is handed over to
# `idv` with what its public schema holds; one owned by any other role is
# refused. Creating the role or the database takes a superuser: postgres over
# TCP when that needs no password, else the postgres OS user (sudo).
ensure_app_login() {
  if [ -n "${DATABASE_URL:-}" ]; then
    return 0 # yours to get right
  fi
  ensure_app_login_on "$(pg_port)"
}

# ensure_app_login on the local cluster on port $1.
ensure_app_login_on() {
  if [ -n "${IDV_LOCAL_PG_PASSWORD:-}" ]; then
    say "IDV_LOCAL_PG_PASSWORD is no longer used: the postgres role's password is never set (see README)"
  fi
  local port=$1 env_file=target/run/env password url
  password=$(saved_password "$env_file" DATABASE_URL idv)
  url="postgres://idv:$password@127.0.0.1:$port/idv"
  if [ -n "$password" ] && [ "$(env -u PGPASSWORD PGPASSFILE=/nonexistent/.pgpass psql -X -w "$url" -qAtc \
    'select datdba = (select oid from pg_roles where rolname = current_user) from pg_database where datname = current_database()' 2>/dev/null)" = t ]; then
    export DATABASE_URL=$url
    write_private_file "$env_file" "export DATABASE_URL=$url"
    return 0
  fi

  say "setting up the PostgreSQL role idv and its database idv (port $port)"
  warn_published_postgres_password "$port"
  password=$(random_password)
  if ! [[ $password =~ ^[0-9a-f]{32,}$ ]]; then
    echo "error: could not generate a password (openssl or /dev/urandom)" >&2
    return 1
  fi
  url="postgres://idv:$password@127.0.0.1:$port/idv"
  local owner
  owner=$(pg_superuser_psql "$port" -At -v db=idv <<'SQL'
SELECT coalesce((SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'db'), '')
SQL
  )
  if [ -n "$owner" ] && [ "$owner" != idv ] && [ "$owner" != postgres ]; then
    cat >&2 <<MSG
error: the database idv on port $port belongs to the role '$owner', not to idv
(these scripts only take over one that earlier versions left, owned by
postgres). Either set DATABASE_URL to reach it with that role's credentials,
or hand it over yourself (as a superuser: ALTER DATABASE idv OWNER TO idv, and
its tables too) and run this again.
MSG
    return 1
  fi
  pg_ensure_role "$port" idv 'LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS' "$password"
  case $owner in
    '')
      pg_superuser_psql "$port" -v db=idv -v role=idv <<'SQL'
CREATE DATABASE :"db" OWNER :"role";
SQL
      ;;
    idv) ;;
    postgres)
      say "handing the database idv (owned by postgres, from an earlier version) over to the role idv"
      pg_superuser_psql "$port" -v db=idv -v role=idv -v old=postgres <<'SQL'
\connect :"db"
ALTER DATABASE :"db" OWNER TO :"role";
-- PostgreSQL 15 makes public's owner pg_database_owner (now idv); an older
-- cluster's public belongs to postgres.
SELECT format('ALTER SCHEMA public OWNER TO %I', :'role')
FROM pg_namespace WHERE nspname = 'public' AND nspowner = :'old'::regrole \gexec
-- Tables first: their indexes and the sequences they own follow them.
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                             WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                             WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END,
              n.nspname, c.relname, :'role')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relowner = :'old'::regrole
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c', 'S')
  AND NOT (c.relkind = 'S' AND EXISTS (
        SELECT FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
ORDER BY c.relkind = 'S', c.relname \gexec
SELECT format('ALTER %s %s OWNER TO %I',
              CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype, :'role')
FROM pg_type t
WHERE t.typnamespace = 'public'::regnamespace AND t.typowner = :'old'::regrole
  AND t.typtype IN ('d', 'e', 'r') \gexec
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, :'role')
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.proowner = :'old'::regrole \gexec
SQL
      ;;
  esac
  export DATABASE_URL=$url
  write_private_file "$env_file" "export DATABASE_URL=$url"
}

# The tests' login, IDV_TEST_POSTGRES_URL (a server, no database), unless
# you set it: the tests create databases and drop their own. The postgres
# role when it logs in over TCP without a password (trust, as on CI);
# otherwise the role `idv_test` (LOGIN, CREATEDB, not a superuser, cannot
# create roles) with a random password of its own, set up through the
# postgres OS user (sudo) and reused while it logs in. Either way the URL is
# kept in target/run/test-env (mode 600), where deploy/clean-test-debris.sh
# finds it.
ensure_test_login() {
  if [ -n "${IDV_TEST_POSTGRES_URL:-}" ]; then
    return 0 # yours to get right
  fi
  ensure_test_login_on "$(pg_port)"
}

# ensure_test_login on the local cluster on port $1.
ensure_test_login_on() {
  local port=$1 env_file=target/run/test-env password url
  if pg_postgres_trusted "$port"; then
    export IDV_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port"
    write_private_file "$env_file" "export IDV_TEST_POSTGRES_URL=$IDV_TEST_POSTGRES_URL"
    return 0
  fi
  password=$(saved_password "$env_file" IDV_TEST_POSTGRES_URL idv_test)
  url="postgres://idv_test:$password@127.0.0.1:$port"
  if [ -z "$password" ] || ! pg_can_login "$url/postgres"; then
    say "setting up the PostgreSQL role idv_test for the tests (port $port)"
    warn_published_postgres_password "$port"
    password=$(random_password)
    if ! [[ $password =~ ^[0-9a-f]{32,}$ ]]; then
      echo "error: could not generate a password (openssl or /dev/urandom)" >&2
      return 1
    fi
    pg_ensure_role "$port" idv_test 'LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS' "$password"
    url="postgres://idv_test:$password@127.0.0.1:$port"
  fi
  export IDV_TEST_POSTGRES_URL=$url
  write_private_file "$env_file" "export IDV_TEST_POSTGRES_URL=$url"
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

# Debian's `prometheus` package (the server and promtool), downloaded with
# apt-get and unpacked under ${XDG_CACHE_HOME:-$HOME/.cache}/idv-pipeline/tools/prometheus,
# not installed: installing it would start a Prometheus server on :9090.
# Sets prometheus_root (the binaries are in $prometheus_root/usr/bin).
# Used by check-artefacts.sh (promtool) and test.sh (the server, for
# tests/tests/prometheus_scrape.rs); once per machine.
ensure_prometheus_package() {
  prometheus_root=${XDG_CACHE_HOME:-$HOME/.cache}/idv-pipeline/tools/prometheus
  if [ -x "$prometheus_root/usr/bin/prometheus" ] && [ -x "$prometheus_root/usr/bin/promtool" ]; then
    return 0
  fi
  say "fetching Debian's prometheus package (prometheus, promtool), unpacked into $prometheus_root"
  local download
  download=$(mktemp -d)
  # apt-get download runs as the calling user (as root, its sandbox user
  # would need write access here); it needs the package lists.
  if ! (cd "$download" && apt-get -qq -o APT::Sandbox::User="$(id -un)" download prometheus) 2>/dev/null; then
    as_root apt-get update -qq
    if ! (cd "$download" && apt-get -qq -o APT::Sandbox::User="$(id -un)" download prometheus); then
      rm -rf "$download"
      echo "error: could not download Debian's prometheus package with apt-get" >&2
      return 1
    fi
  fi
  rm -rf "$prometheus_root"
  mkdir -p "$prometheus_root"
  if ! dpkg-deb -x "$download"/prometheus_*.deb "$prometheus_root"; then
    rm -rf "$download" "$prometheus_root"
    echo "error: could not unpack Debian's prometheus package" >&2
    return 1
  fi
  rm -rf "$download"
  "$prometheus_root/usr/bin/prometheus" --version >/dev/null
}

ensure_tools() {
  local missing=()
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  # The e-mail tests' SMTP server (tests/src/smtp.rs), for the system Python.
  /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
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

# Installs and starts what is missing; the logins are ensure_app_login's
# (deploy/up.sh) and ensure_test_login's (deploy/test.sh, deploy/bench.sh).
ensure_services() {
  ensure_tools
  ensure_postgres
  ensure_rabbitmq
}
