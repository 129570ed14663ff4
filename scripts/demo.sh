#!/usr/bin/env bash
# A relay, two devices of one identity, a file stored on one and fetched on
# the other, all on this machine, in a temporary directory.
#
#   bash scripts/demo.sh [BIN_DIR]     (default target/release; build first)
#
# Everything it does is a plain `cairn` command, printed before it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release}")
for tool in cairn cairn-relay; do
  [ -x "$bin/$tool" ] || { echo "no $bin/$tool: run 'cargo build --release' first" >&2; exit 2; }
done
work=$(mktemp -d /tmp/cairn-demo.XXXXXX)
port=${CAIRN_DEMO_PORT:-17070}
cleanup() {
  [ -n "${relay_pid:-}" ] && kill "$relay_pid" 2>/dev/null || true
  [ -n "${join_pid:-}" ] && kill "$join_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Demo only: real users type their passphrase when asked.
export CAIRN_PASSPHRASE="demo passphrase"
show() { printf '\n$ %s\n' "$*"; "$@"; }
laptop() { show "$bin/cairn" --home "$work/laptop" "$@"; }
phone() { show "$bin/cairn" --home "$work/phone" "$@"; }

echo "== a relay on 127.0.0.1:$port (data in $work/relay)"
"$bin/cairn-relay" serve --data "$work/relay" --listen "127.0.0.1:$port" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
relay="http://127.0.0.1:$port"

echo; echo "== the laptop creates an identity and stores a file"
laptop init --name laptop
laptop relay add "$relay"
laptop put README.md --name readme
laptop ls

echo; echo "== the phone joins: it shows a code, the laptop approves it"
"$bin/cairn" --home "$work/phone" device join --relay "$relay" --name phone --json \
  >"$work/join.out" 2>"$work/join.err" &
join_pid=$!
for _ in $(seq 100); do
  [ -s "$work/join.out" ] && break
  sleep 0.1
done
code=$(head -n1 "$work/join.out" | sed -e 's/.*"code":"\([^"]*\)".*/\1/')
echo "(the phone shows: pairing code $code)"
laptop device approve "$code"
wait "$join_pid"
join_pid=
tail -n +2 "$work/join.out"

echo; echo "== the phone fetches the file the laptop stored"
phone get readme -o "$work/readme-on-phone"
cmp README.md "$work/readme-on-phone" && echo "identical: the phone has the laptop's file"

echo; echo "== the phone stores a file of its own; the laptop syncs and sees it"
phone put Cargo.toml --name from-phone
laptop sync
laptop ls
phone device list
