#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory:
# the application's own role `idv` (no superuser, no CREATEDB) owning the
# database `idv`. Its password comes from IDV_DB_PASSWORD, passed to psql as
# a variable, never pasted into SQL.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v pw="$IDV_DB_PASSWORD" <<'SQL'
CREATE ROLE idv LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
CREATE DATABASE idv OWNER idv;
SQL
