#!/usr/bin/env bash
# Side-by-side: `cairn put` / `cairn get` of one file against the standard
# `age` tool encrypting / decrypting the same file, in the same run, on the
# same machine. Prints seconds, MB/s and the throughput ratio cairn/age.
#
#   bash bench/client.sh [SIZE] [RUNS]    (default 1G, best of 2 runs)
#
# SIZE is anything `head -c` takes (256M for a quick run, 1G). The relays
# take blobs up to 2G, so keep SIZE under about 1.9G.
#
# Needs age (Debian package; the reference, and the key format cairn seals to):
#   apt-get install -y age
#
# Three relays run on loopback, each with its own data directory. Two client
# homes: one with relay 1 only (1 copy per file), one with all three
# (3 copies per file). Per run, in this order: age -e, age -d, put/get with
# 1 relay, put/get with 3 relays. Each get and `age -d` output is compared
# with the input (cmp, outside the clock), and each put must report 1 or 3
# copies. The best (shortest) time of RUNS is reported. MB/s are plaintext
# bytes / 1e6 / seconds.
#
# What each side does (so the ratio is read right):
# - cairn put: seals the file (the age format, padded) into a temp file in
#   its home, fsyncs it, then uploads it to N relays at once; each relay
#   acknowledges only after its copy is on stable storage. Plus the signed
#   file list update.
# - cairn get: downloads from the fastest relay into a temp file, verifying
#   the hash as it comes, then decrypts into a temp file next to -o, fsyncs
#   and renames it.
# - age -e / age -d: read the file, write the output; no fsync (the fsync
#   of age's output is timed separately and printed under the table).
# Key files use a cheap scrypt cost (CAIRN_INSECURE_KDF_COST=10) so unlocking
# them does not dominate; with the default cost (log2 N = 18) each command
# spends about 2 s more on it (a 1 MiB put or get: 2.2-2.7 s instead of
# 0.04-0.3 s). The input file, and on get the relays' copies, are in the
# page cache: these figures do not include cold reads.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1G}
runs=${2:-2}
for tool in age curl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y age curl python3" >&2; exit 2; }
done
export RUST_BACKTRACE=0
cargo build --release -q -p cairn-relay -p cairn-cli
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release # honours CARGO_TARGET_DIR
work=$(mktemp -d /tmp/cairn-client-bench.XXXXXX)
ports=(17181 17182 17183)
relay_pids=()
cleanup() {
  for pid in "${relay_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT

# Relays, limits off (rates, quota), room for the copies of every run.
for i in 0 1 2; do
  port=${ports[$i]}
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
    echo "port $port is already in use" >&2; exit 2
  fi
  "$bin/cairn-relay" serve --data "$work/relay$i" --listen "127.0.0.1:$port" \
    --capacity 20G --max-blob-size 2G --key-quota 0 --key-rate 0 --addr-rate 0 \
    2>"$work/relay$i.log" &
  relay_pids+=($!)
done
for port in "${ports[@]}"; do
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { echo "relay on $port did not start" >&2; exit 1; }
done

# Client homes: h1 stores 1 copy on relay 1, h3 stores 3 copies on relays 1-3.
export CAIRN_PASSPHRASE=bench-passphrase CAIRN_INSECURE_KDF_COST=10
cairn() { "$bin/cairn" "$@"; }
cairn --home "$work/h1" init --name bench --json >/dev/null
cairn --home "$work/h1" relay add "http://127.0.0.1:${ports[0]}" --json >/dev/null
cairn --home "$work/h1" config --replicas 1 --json >/dev/null
cairn --home "$work/h3" init --name bench --json >/dev/null
for port in "${ports[@]}"; do
  cairn --home "$work/h3" relay add "http://127.0.0.1:$port" --json >/dev/null
done
cairn --home "$work/h3" config --replicas 3 --json >/dev/null

# The age reference uses h1's vault key (an X25519 age identity, the same
# key cairn seals to), so both sides do the same public-key work.
cairn --home "$work/h1" key export-vault "$work/vault.txt" --json >/dev/null
recipient=$(sed -n 's/^# generation [0-9]*, recipient \(age1[a-z0-9]*\)$/\1/p' "$work/vault.txt" | tail -n 1)
[ -n "$recipient" ] || { echo "no recipient in the exported vault file" >&2; exit 1; }

head -c "$size" /dev/urandom >"$work/input"
sync "$work/input" # so its writeback does not land in the first measurement
bytes=$(stat -c %s "$work/input")

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
# timed VAR COMMAND...: runs COMMAND (its output to $work/last.out), keeps
# the shorter of VAR's current value and this run's seconds in VAR.
timed() {
  local var=$1 t0 secs
  shift
  t0=$(now)
  "$@" >"$work/last.out"
  secs=$(since "$t0")
  printf -v "$var" '%s' "$(awk -v a="${!var}" -v b="$secs" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }')"
}
same() { # FILE: must equal the input
  cmp -s "$work/input" "$1" || { echo "MISMATCH: $1 differs from the input" >&2; exit 1; }
  rm -f "$1"
}
copies() { # N: the put just timed must report N copies
  python3 -c 'import json,sys; sys.exit(len(json.load(open(sys.argv[1]))["copies"]) != int(sys.argv[2]))' \
    "$work/last.out" "$1" || { echo "put did not store $1 copies: $(cat "$work/last.out")" >&2; exit 1; }
}

age_e= age_d= age_e_sync= age_d_sync= put1= get1= put3= get3=
for run in $(seq "$runs"); do
  timed age_e age -e -r "$recipient" -o "$work/age.enc" "$work/input"
  timed age_e_sync sync "$work/age.enc"
  timed age_d age -d -i "$work/vault.txt" -o "$work/age.dec" "$work/age.enc"
  timed age_d_sync sync "$work/age.dec"
  same "$work/age.dec"
  rm -f "$work/age.enc"

  timed put1 cairn --home "$work/h1" put "$work/input" --name "bench-$run" --json
  copies 1
  timed get1 cairn --home "$work/h1" get "bench-$run" -o "$work/get1.out" --json
  same "$work/get1.out"

  timed put3 cairn --home "$work/h3" put "$work/input" --name "bench-$run" --json
  copies 3
  timed get3 cairn --home "$work/h3" get "bench-$run" -o "$work/get3.out" --json
  same "$work/get3.out"
done

row() { # label cairn_secs age_secs
  awk -v label="$1" -v c="$2" -v a="$3" -v n="$bytes" 'BEGIN {
    cm = n / 1e6 / c; am = n / 1e6 / a
    printf "%-20s %8.2f %10.1f %8.2f %10.1f %7.2fx\n", label, c, cm, a, am, cm / am }'
}

echo
echo "cairn $("$bin/cairn" --version | awk '{print $2}') vs $(age --version), $(nproc) cores," \
  "$bytes bytes of random data, best of $runs run(s)"
echo "(CAIRN_INSECURE_KDF_COST=10: cheap scrypt for key files; input and relay copies in page cache)"
printf '%-20s %8s %10s %8s %10s %8s\n' "" "cairn s" "cairn MB/s" "age s" "age MB/s" "ratio"
row "put, 1 relay" "$put1" "$age_e"
row "put, 3 relays" "$put3" "$age_e"
row "get, 1 relay" "$get1" "$age_d"
row "get, 3 relays" "$get3" "$age_d"
echo "(ratio = MB/s cairn / age; put vs age -e, get vs age -d; every output verified with cmp)"
echo "(age does not fsync; fsync of its output afterwards took $age_e_sync s (-e), $age_d_sync s (-d))"
