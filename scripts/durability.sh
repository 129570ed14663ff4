#!/usr/bin/env bash
# Runs every scenario docs/DURABILITY.md quotes and writes its tables and
# charts under docs/durability/NAME/ (daily.csv and daily.svg for one run,
# sweep.csv and sweep.svg for a sweep); the tables are printed as the page
# shows them. The scale runs are left out: run them by hand
#   cargo run --release -p cairn-sim -- scenarios/scale-1m.toml
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cairn-sim
for scenario in scenarios/*.toml; do
    name=$(basename "$scenario" .toml)
    case "$name" in scale-*|validate) continue ;; esac
    echo "### $name"
    "${CARGO_TARGET_DIR:-target}/release/cairn-sim" "$scenario" --out "docs/durability/$name"
done
