#!/usr/bin/env bash
# Hostile manifests: how long `nodelet validate` takes on ~1 MiB inputs
# built to exhaust a parser, and its peak memory (median of $RUNS runs,
# wall seconds and max RSS from /usr/bin/time). The peer is PyYAML's
# safe_load (C loader when built) on the same files, in the same run:
#   deep      1 MiB of nested flow sequences            (nodelet: depth limit)
#   aliases   one 64 KiB value aliased 16k times        (nodelet: expansion budget)
#   laughs    the billion-laughs anchor pyramid          (nodelet: expansion budget)
#   dupkeys   a 1 MiB mapping whose keys repeat          (nodelet: duplicate key)
#   wide      a valid pod with 1 MiB of labels           (decoded)
#   oversize  a 2 MiB file                               (nodelet: size limit)
# Goal (issue 28): each refused or decoded well under 1 s and 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
bin=$PWD/target/release/nodelet
work=$(mktemp -d /tmp/nodelet-bench-hostile-XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
head = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n"
n = (1 << 19) - 64
open(f"{w}/deep.yaml", "w").write(head + "spec: " + "[" * n + "]" * n + "\n")
big = "y" * (64 << 10)
open(f"{w}/aliases.yaml", "w").write(
    head + f"  annotations:\n    a: &a {big}\n" + "spec:\n  containers: [" + ", ".join(["*a"] * (1 << 14)) + "]\n")
laughs = ['a0: &a0 "lol"']
for i in range(1, 10):
    laughs.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 9) + "]")
open(f"{w}/laughs.yaml", "w").write(
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  labels: {}\nx:\n" + "\n".join("  " + l for l in laughs) + "\n")
keys = "".join(f"    k{i % 1000}: v\n" for i in range(1 << 16))
open(f"{w}/dupkeys.yaml", "w").write(head + "  labels:\n" + keys)
labels = "".join(f"    k{i}: {'v' * 40}\n" for i in range(1 << 14))
open(f"{w}/wide.yaml", "w").write(head + "  labels:\n" + labels + "spec:\n  containers: [{name: c, image: busybox}]\n")
open(f"{w}/oversize.yaml", "w").write(head + "  labels:\n" + "".join(f"    k{i}: {'v' * 40}\n" for i in range(1 << 15)))
PY
cat >"$work/peer.py" <<'PY'
import sys, yaml
loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
try:
    for _ in yaml.load_all(open(sys.argv[1]), Loader=loader):
        pass
except Exception as e:
    print(type(e).__name__, file=sys.stderr)
PY
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # prints "seconds maxrss_kib" of one run of "$@"
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || true
  tail -1 "$work/t"
}
printf '%-9s %7s %11s %12s %9s %11s %12s  %s\n' input size nodelet_s nodelet_MiB pyyaml_s pyyaml_MiB time_ratio verdict
for f in deep aliases laughs dupkeys wide oversize; do
  file="$work/$f.yaml"
  ns="" nm="" ps="" pm=""
  for _ in $(seq "$RUNS"); do
    read -r s m < <(measure "$bin" validate "$file"); ns+=" $s"; nm+=" $m"
    read -r s m < <(timeout 60 /usr/bin/time -f '%e %M' python3 "$work/peer.py" "$file" 2>&1 >/dev/null | tail -1 || echo "60 0"); ps+=" $s"; pm+=" $m"
  done
  verdict=$({ "$bin" validate "$file" 2>&1 || true; } | tail -1 | sed "s|$work/||" | cut -c1-100)
  n_s=$(echo "$ns" | median); n_m=$(echo "$nm" | median)
  p_s=$(echo "$ps" | median); p_m=$(echo "$pm" | median)
  ratio=$(awk -v a="$n_s" -v b="$p_s" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  printf '%-9s %6dK %11s %12.1f %9s %11.1f %12s  %s\n' "$f" "$(( $(stat -c %s "$file") / 1024 ))" \
    "$n_s" "$(awk -v k="$n_m" 'BEGIN{print k/1024}')" "$p_s" "$(awk -v k="$p_m" 'BEGIN{print k/1024}')" "$ratio" "$verdict"
done
