#!/usr/bin/env bash
# cgroup benchmarks, peers measured in the same run, medians:
# (1) cost of a container's cgroup: create + start + wait + remove of
#     /bin/true from one bundle with linux.cgroupsPath set, against the
#     same without it (`nodelet run-container`), beside runc and crun
#     running the cgroup bundle; in a private mount namespace with the
#     cgroup2 mount hidden, because crun refuses this hybrid layout.
# (2) pause/unpause latency of a 100-process container: `nodelet pause` /
#     `nodelet unpause` (CLI → API → worker → freezer, waiting for FROZEN)
#     against `runc pause` / `runc resume` of the same shape.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
PAUSES=${PAUSES:-10}
bin=$PWD/target/release/nodelet
work=$(mktemp -d /tmp/nodelet-bench-cg-XXXXXX)
cleanup() {
  runc kill "bench-pause-$$" KILL 2>/dev/null || true
  sleep 0.2
  runc delete -f "bench-pause-$$" 2>/dev/null || true
  [ -n "${runpid:-}" ] && kill "$runpid" 2>/dev/null && wait "$runpid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for c in runc crun; do command -v "$c" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$c" >/dev/null; done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
ms() { python3 -c "print(f'{$1/1e6:.2f}')"; }

for b in plain cg; do
  mkdir -p "$work/$b/rootfs/bin"
  cp /bin/busybox "$work/$b/rootfs/bin/"
  for a in true sh sleep seq; do ln -sf busybox "$work/$b/rootfs/bin/$a"; done
done
CGROUP= cargo run -q --release --example bundle -- "$work/plain" true
CGROUP=/nodelet-bench-$$ cargo run -q --release --example bundle -- "$work/cg" true

cat >"$work/inner.sh" <<'INNER'
set -euo pipefail
work=$1 bin=$2 runs=$3
umount /sys/fs/cgroup/unified 2>/dev/null || true
now() { date +%s%N; }
declare -A T
for i in $(seq "$runs"); do
  s=$(now); "$bin" run-container "$work/plain" </dev/null >/dev/null; T[nodelet_nocgroup]+=" $(( $(now) - s ))"
  s=$(now); "$bin" run-container "$work/cg" </dev/null >/dev/null; T[nodelet]+=" $(( $(now) - s ))"
  s=$(now); runc run -b "$work/cg" "bench-runc-$$-$i" </dev/null >/dev/null; T[runc]+=" $(( $(now) - s ))"
  s=$(now); crun run -b "$work/cg" "bench-crun-$$-$i" </dev/null >/dev/null; T[crun]+=" $(( $(now) - s ))"
done
for k in nodelet_nocgroup nodelet runc crun; do echo "$k ${T[$k]}"; done
INNER
declare -A T
while read -r k v; do T[$k]=$v; done < <(unshare -m bash "$work/inner.sh" "$work" "$bin" "$RUNS")
n=$(echo "${T[nodelet]}" | median)
base=$(echo "${T[nodelet_nocgroup]}" | median)
echo
echo "## container run of /bin/true with its own cgroup (create+start+wait+remove), median of $RUNS (ms)"
printf '%-18s %10s %14s\n' tool median_ms "nodelet/tool"
for k in nodelet_nocgroup nodelet runc crun; do
  m=$(echo "${T[$k]}" | median)
  printf '%-18s %10s %14s\n' "$k" "$(ms "$m")" "$(python3 -c "print(f'{$n/$m:.2f}')")"
done
echo "cgroup set-up + teardown per container (nodelet - nodelet_nocgroup): $(ms $((n - base))) ms"

# (2) pause/unpause of 100 processes.
hundred='for i in $(seq 100); do sleep 100000 & done; wait'
mkdir -p "$work/pause/rootfs/bin"
cp -a "$work/cg/rootfs/." "$work/pause/rootfs/"
CGROUP=/nodelet-bench-pause-$$ cargo run -q --release --example bundle -- "$work/pause" sh -c "$hundred"
runc run -d -b "$work/pause" "bench-pause-$$" </dev/null >/dev/null 2>&1
until [ "$(runc ps "bench-pause-$$" 2>/dev/null | wc -l)" -ge 102 ]; do sleep 0.05; done

cargo run -q --release --example testbed -- "$work/layout" >/dev/null
root=$work/n
"$bin" --root "$root" image import "$work/layout" --name busybox-1 >/dev/null 2>&1
ref=docker.io/library/busybox-1:latest
cat >"$work/pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: hundred}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: app, image: $ref, imagePullPolicy: Never, command: [sh, -c, '$hundred']}]
EOF
sock=$work/nodelet.sock
"$bin" --root "$root" --socket "$sock" --log-dir "$work/logs" run "$work/pod.yaml" >/dev/null 2>&1 &
runpid=$!
until "$bin" --socket "$sock" get pods hundred 2>/dev/null | grep -q Running; do sleep 0.1; done
uid=$("$bin" --socket "$sock" get pod hundred -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["uid"])')
until [ "$(cat /sys/fs/cgroup/pids/nodelet/kubepods/besteffort/pod$uid/pids.current 2>/dev/null || echo 0)" -ge 101 ]; do sleep 0.05; done

now() { date +%s%N; }
declare -A P
for i in $(seq "$PAUSES"); do
  s=$(now); "$bin" --socket "$sock" pause hundred >/dev/null; P[nodelet_pause]+=" $(( $(now) - s ))"
  s=$(now); "$bin" --socket "$sock" unpause hundred >/dev/null; P[nodelet_unpause]+=" $(( $(now) - s ))"
  s=$(now); runc pause "bench-pause-$$"; P[runc_pause]+=" $(( $(now) - s ))"
  s=$(now); runc resume "bench-pause-$$"; P[runc_resume]+=" $(( $(now) - s ))"
done
echo
echo "## pause / unpause of a 101-process container, median of $PAUSES (ms)"
np=$(echo "${P[nodelet_pause]}" | median); nu=$(echo "${P[nodelet_unpause]}" | median)
rp=$(echo "${P[runc_pause]}" | median); ru=$(echo "${P[runc_resume]}" | median)
printf '%-10s %12s %12s %8s\n' op nodelet runc ratio
printf '%-10s %12s %12s %8s\n' pause "$(ms "$np")" "$(ms "$rp")" "$(python3 -c "print(f'{$np/$rp:.2f}')")"
printf '%-10s %12s %12s %8s\n' unpause "$(ms "$nu")" "$(ms "$ru")" "$(python3 -c "print(f'{$nu/$ru:.2f}')")"
