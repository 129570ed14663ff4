#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS each (default 300) and prints a
# summary line per target: run time, executions, and whether it crashed.
# Each run is also appended to fuzz/campaign.tsv (committed), the ledger of
# how long each target has been fuzzed in all.
#
#   bash fuzz/run-all.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The stable
# toolchain builds the sanitizer-instrumented targets when told to accept
# nightly flags: RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
python3 fuzz/seed-corpus.py
mkdir -p fuzz/logs
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir fuzz
status=0
for t in "${targets[@]}"; do
  log="fuzz/logs/$t.log"
  # Nice: a campaign shares the machine with builds and tests.
  if nice -n 19 cargo fuzz run --fuzz-dir fuzz "$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    verdict=ok
  else
    verdict=CRASH
    status=1
  fi
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  rate=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
  cov=$(grep -E '#[0-9]+.*cov:' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
  printf '%-22s %4ss  %12s execs  %8s/s  cov %-6s %s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$verdict"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" \
    "$t" "$seconds" "${execs:-?}" "${cov:-?}" "$verdict" >>fuzz/campaign.tsv
done
exit $status
