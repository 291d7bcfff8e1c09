#!/usr/bin/env bash
# Benchmarks (`make bench`). Figures are ratios against a peer measured in
# the same run, median over several runs; nothing here asserts a time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/images.sh
bash bench/runtime.sh
bash bench/security.sh
bash bench/shim-memory.sh
bash bench/pods.sh
bash bench/cgroups.sh
bash bench/probes.sh
