#!/usr/bin/env bash
# Sums fuzz/campaign.tsv per target: how long each target has been fuzzed
# in all, by wall clock and by processor time, and how many inputs it ran.
#
#   bash fuzz/ledger.sh
#
# Runs from before the ledger recorded processor time count under
# "cpu unrecorded"; a niced run sharing the cores with builds gets less
# processor time than its wall-clock budget, so the two columns together
# bound what a target has really had.
set -euo pipefail
cd "$(dirname "$0")/.."
awk -F'\t' '
  NR == 1 { next }
  {
    t = $3
    runs[t]++
    wall[t] += $4
    if ($5 != "?") execs[t] += $5
    if ($8 == "?" || $8 == "") unknown[t] += $4; else cpu[t] += $8
    if ($7 != "ok") crashes[t]++
  }
  END {
    printf "%-20s %4s %8s %8s %15s %15s %7s\n", "target", "runs", "wall s", "cpu s", "cpu unrecorded", "executions", "crashes"
    for (t in runs)
      printf "%-20s %4d %8d %8d %15d %15d %7d\n", t, runs[t], wall[t], cpu[t], unknown[t], execs[t], crashes[t]
  }
' fuzz/campaign.tsv | { IFS= read -r header; echo "$header"; sort; }
