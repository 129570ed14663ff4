#!/usr/bin/env bash
# Real backends for the relay's scale-out tests: a throwaway PostgreSQL 15
# (Debian's) and an S3-compatible server (s3s-fs, which checks SigV4
# signatures), both on 127.0.0.1 only, both living under one folder.
#
#   scripts/backends.sh start DIR   fresh servers under DIR; writes DIR/env
#   scripts/backends.sh stop DIR    stops them (idempotent)
#
# After `start`, `source DIR/env` exports
#   CAIRN_TEST_PG_URL          postgres://cairn:cairn@127.0.0.1:PORT/cairn
#   CAIRN_TEST_S3_ENDPOINT     http://127.0.0.1:PORT  (path-style requests)
#   CAIRN_TEST_S3_BUCKET       cairn-test
#   CAIRN_TEST_S3_REGION       us-east-1
#   CAIRN_TEST_S3_ACCESS_KEY   cairn-test-key
#   CAIRN_TEST_S3_SECRET_KEY   cairn-test-secret
#   CAIRN_TEST_S3_ROOT         DIR/s3 (the served folder: tests look at the objects)
# Tests that need these servers read the variables; .ci/run starts the
# servers before the tests and stops them on exit. s3s-fs answers only
# S3-style SigV4 requests (the x-amz-content-sha256 header is required; a
# wrong secret gets SignatureDoesNotMatch) but does not check the region;
# buckets are folders under DIR/s3, so it has only the one made here.
#
# `start` wipes what an earlier `start` left in DIR (DIR/pg, DIR/s3, the logs,
# the env file) after stopping its servers; DIR itself is kept. The database
# is for tests only: fsync is off, unless CAIRN_BACKENDS_DURABLE=1 (for
# benchmarks, which must compare durable commits with durable commits). The role `cairn` (password `cairn`) owns
# the database `cairn` and may create databases. Ports: 55432 and 59014, or
# the next free ones. Logs: DIR/pg.log, DIR/s3s-fs.log.
#
# PostgreSQL refuses to run as root: as root (as in CI) the cluster is run by
# the `postgres` system user (created if missing). s3s-fs is installed with
# cargo if it is not on PATH (about 2.5 minutes on 2 cores).
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
S3S_FS_VERSION=0.14.1
PG_PORT_FIRST=55432
S3_PORT_FIRST=59014
S3_BUCKET=cairn-test
S3_REGION=us-east-1
S3_ACCESS_KEY=cairn-test-key
S3_SECRET_KEY=cairn-test-secret
WAIT_SECS=60

die() {
  printf 'backends.sh: %s\n' "$*" >&2
  exit 1
}
note() { printf 'backends.sh: %s\n' "$*" >&2; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Runs a command as the cluster's owner: `postgres` when we are root.
as_pg() {
  if ((EUID == 0)); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The first port from $1 on (within 200) that nothing listens on, skipping $2.
free_port() {
  local p
  for ((p = $1; p < $1 + 200; p++)); do
    [[ $p == "${2:-}" ]] && continue
    if ! port_open "$p" && ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
      echo "$p"
      return
    fi
  done
  die "no free port in $1..$(($1 + 199))"
}

show_log() {
  if [[ -f $1 ]]; then
    printf -- '---- last lines of %s ----\n' "$1" >&2
    tail -n 40 "$1" >&2
    printf -- '---- end of %s ----\n' "$1" >&2
  fi
}

# The s3s-fs binary, installing it with cargo when it is missing.
find_s3s_fs() {
  if command -v s3s-fs >/dev/null; then
    command -v s3s-fs
    return
  fi
  local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"
  if [[ ! -x $cargo_bin ]]; then
    note "s3s-fs not found; installing s3s-fs@$S3S_FS_VERSION with cargo (takes a few minutes)"
    cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked >&2 ||
      die "cargo install s3s-fs@$S3S_FS_VERSION failed"
  fi
  [[ -x $cargo_bin ]] || die "s3s-fs is not at $cargo_bin after cargo install"
  echo "$cargo_bin"
}

# Stops the servers recorded under $1; quiet when none run.
stop_servers() {
  local dir=$1 pid i
  if [[ -f $dir/pg/data/postmaster.pid ]]; then
    if as_pg "$PG_BIN/pg_ctl" status -D "$dir/pg/data" >/dev/null 2>&1; then
      as_pg "$PG_BIN/pg_ctl" stop -D "$dir/pg/data" -m fast -w -t "$WAIT_SECS" >/dev/null ||
        die "pg_ctl stop failed for $dir/pg/data"
    fi
  fi
  # A socket folder made in /tmp for a long DIR (see start).
  if [[ -L $dir/pg/sock ]]; then
    rm -rf "$(readlink "$dir/pg/sock")"
    rm -f "$dir/pg/sock"
  fi
  if [[ -f $dir/s3s-fs.pid ]]; then
    pid=$(<"$dir/s3s-fs.pid")
    # Only a process that still is s3s-fs: the pid may have been reused.
    if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == s3s-fs ]]; then
      kill "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
      done
      if [[ -d /proc/$pid ]]; then
        note "s3s-fs (pid $pid) ignored SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$dir/s3s-fs.pid"
  fi
}

# Set while `start` runs; if it fails, what it started is stopped.
STARTING_DIR=
on_exit() {
  if [[ $STARTING_DIR ]]; then
    stop_servers "$STARTING_DIR" || true
  fi
}
trap on_exit EXIT

start() {
  local dir=$1
  [[ -x $PG_BIN/postgres ]] ||
    die "PostgreSQL 15 is not installed ($PG_BIN/postgres missing): apt-get install postgresql"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)

  stop_servers "$dir"
  STARTING_DIR=$dir
  rm -rf "$dir/pg" "$dir/s3" "$dir/env" "$dir/pg.log" "$dir/s3s-fs.log" "$dir/s3s-fs.pid"

  local s3s_fs
  s3s_fs=$(find_s3s_fs)

  # ---- PostgreSQL ----
  if ((EUID == 0)); then
    if ! id -u postgres >/dev/null 2>&1; then
      useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres ||
        die "could not create the postgres system user"
    fi
    # The postgres user must reach DIR/pg: open DIR for traversal.
    chmod a+rx "$dir"
    runuser -u postgres -- test -x "$dir" ||
      die "the postgres user cannot enter $dir (a parent folder is closed to it); use a folder under /tmp"
  fi
  local pg_port sock
  pg_port=$(free_port "$PG_PORT_FIRST")
  mkdir -p "$dir/pg"
  # The Unix socket is used only to set up the role and database. Its path
  # has to be short (about 100 bytes).
  sock="$dir/pg/sock"
  if ((${#sock} > 90)); then
    sock=$(mktemp -d /tmp/cairn-pg-sock.XXXXXX)
    ln -s "$sock" "$dir/pg/sock"
  else
    mkdir -p "$sock"
  fi
  touch "$dir/pg.log"
  if ((EUID == 0)); then
    chown -R postgres: "$dir/pg" "$sock" "$dir/pg.log"
  fi
  as_pg "$PG_BIN/initdb" -D "$dir/pg/data" -U postgres --encoding=UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$dir/pg/initdb.log" 2>&1 || {
    show_log "$dir/pg/initdb.log"
    die "initdb failed"
  }
  cat >>"$dir/pg/data/postgresql.conf" <<EOF

# scripts/backends.sh: a throwaway test server on loopback only
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$sock'
max_connections = 200
EOF
  if [[ "${CAIRN_BACKENDS_DURABLE:-0}" != 1 ]]; then
    printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' \
      >>"$dir/pg/data/postgresql.conf"
  fi
  as_pg "$PG_BIN/pg_ctl" start -D "$dir/pg/data" -l "$dir/pg.log" -w -t "$WAIT_SECS" >/dev/null || {
    show_log "$dir/pg.log"
    die "PostgreSQL did not start (port $pg_port)"
  }
  local i ok=
  for ((i = 0; i < WAIT_SECS * 10; i++)); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -t 1; then
      ok=1
      break
    fi
    sleep 0.1
  done
  [[ $ok ]] || {
    show_log "$dir/pg.log"
    die "PostgreSQL does not accept connections on 127.0.0.1:$pg_port after ${WAIT_SECS}s"
  }
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$pg_port" -U postgres -d postgres \
    -c "CREATE ROLE cairn LOGIN CREATEDB PASSWORD 'cairn'" \
    -c "CREATE DATABASE cairn OWNER cairn" >/dev/null || {
    show_log "$dir/pg.log"
    die "could not create the role and database cairn"
  }

  # ---- s3s-fs ----
  local s3_port pid
  s3_port=$(free_port "$S3_PORT_FIRST" "$pg_port")
  # s3s-fs serves each folder under its root as a bucket.
  mkdir -p "$dir/s3/$S3_BUCKET"
  # setsid: the server outlives the shell that started it until `stop`.
  setsid "$s3s_fs" --host 127.0.0.1 --port "$s3_port" \
    --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" \
    "$dir/s3" </dev/null >"$dir/s3s-fs.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/s3s-fs.pid"
  ok=
  for ((i = 0; i < WAIT_SECS * 10; i++)); do
    [[ -d /proc/$pid ]] || break
    # Any HTTP answer (an unsigned request gets an S3 error) means it is up.
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$s3_port/") != 000 ]]; then
      ok=1
      break
    fi
    sleep 0.1
  done
  [[ $ok ]] || {
    show_log "$dir/s3s-fs.log"
    die "s3s-fs does not answer on 127.0.0.1:$s3_port (exited or timed out after ${WAIT_SECS}s)"
  }

  cat >"$dir/env" <<EOF
# written by scripts/backends.sh start $dir; stop with: bash scripts/backends.sh stop $dir
export CAIRN_TEST_PG_URL=postgres://cairn:cairn@127.0.0.1:$pg_port/cairn
export CAIRN_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
export CAIRN_TEST_S3_BUCKET=$S3_BUCKET
export CAIRN_TEST_S3_REGION=$S3_REGION
export CAIRN_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY
export CAIRN_TEST_S3_SECRET_KEY=$S3_SECRET_KEY
export CAIRN_TEST_S3_ROOT=$dir/s3
EOF
  STARTING_DIR=
  echo "backends up: PostgreSQL 15 on 127.0.0.1:$pg_port (db cairn), s3s-fs on 127.0.0.1:$s3_port (bucket $S3_BUCKET); source $dir/env"
}

stop() {
  local dir=$1
  [[ -d $dir ]] || return 0
  stop_servers "$dir"
  echo "backends stopped ($dir)"
}

(($# == 2)) || usage
case $1 in
  start) start "$2" ;;
  stop) stop "$2" ;;
  *) usage ;;
esac
