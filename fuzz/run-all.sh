#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 300) and prints a
# summary line per target: run time, executions, and whether it crashed.
# Each run is also appended to fuzz/campaign.tsv (committed), the ledger of
# how long each target has been fuzzed in all.
#
#   bash fuzz/run-all.sh [SECONDS] [TARGET[:SECONDS]...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The stable
# toolchain builds the sanitizer-instrumented targets when told to accept
# nightly flags: RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
default_seconds=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
python3 fuzz/seed-corpus.py
mkdir -p fuzz/logs
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir fuzz
# The binaries are run directly rather than through `cargo fuzz run`, which
# would rebuild whenever the sources change during a long campaign; the
# ledger names the commit they were built from.
built=$(git rev-parse --short HEAD)
if ! git diff --quiet HEAD -- crates fuzz/src fuzz/fuzz_targets; then
  built="$built+"
fi
bin=target/x86_64-unknown-linux-gnu/release
status=0
for spec in "${targets[@]}"; do
  # TARGET:SECONDS gives one target a budget of its own.
  t=${spec%%:*}
  seconds=${spec#*:}
  [ "$seconds" = "$spec" ] && seconds=$default_seconds
  log="fuzz/logs/$t.log"
  mkdir -p "fuzz/artifacts/$t"
  # Nice: a campaign shares the machine with builds and tests. The ledger
  # records processor time as well as wall time, because a niced run that
  # shares the cores with a build gets less than its wall-clock budget.
  if nice -n 19 /usr/bin/time -f '%U %S' -o "$log.cpu" \
    "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" \
    -print_final_stats=1 "fuzz/corpus/$t" >"$log" 2>&1; then
    verdict=ok
  else
    verdict=CRASH
    status=1
  fi
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  rate=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
  cov=$(grep -E '#[0-9]+.*cov:' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
  cpu=$(awk 'END{printf "%d", $1 + $2}' "$log.cpu" 2>/dev/null || true)
  printf '%-22s %4ss (cpu %5ss)  %12s execs  %8s/s  cov %-6s %s\n' "$t" "$seconds" "${cpu:-?}" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$verdict"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$built" \
    "$t" "$seconds" "${execs:-?}" "${cov:-?}" "$verdict" "${cpu:-?}" >>fuzz/campaign.tsv
done
exit $status
