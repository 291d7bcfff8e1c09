#!/usr/bin/env bash
# Benchmarks (`make bench`). Figures are ratios against a peer measured in
# the same run, median over several runs; nothing here asserts a time.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/nodelet
runs=${RUNS:-20}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "# manifest validation: nodelet validate of the test corpus (${runs} runs)"
ts=()
for _ in $(seq "$runs"); do
  s=$(date +%s%N); $bin validate tests/corpus >/dev/null 2>&1; e=$(date +%s%N)
  ts+=($(( (e - s) / 1000 )))
done
printf '%s\n' "${ts[@]}" | median | awk '{printf "median %.1f ms\n", $1/1000}'
echo "(image pull, container start and pod start benchmarks arrive with their issues)"
