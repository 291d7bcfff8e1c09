#!/usr/bin/env bash
# Container start benchmark: create + start + wait + remove of a container
# running /bin/true (busybox) from one bundle, median of $RUNS runs,
# interleaved: `nodelet run-container`, `runc run`, `crun run`.
# crun refuses this hybrid cgroup machine ("cgroups in hybrid mode not
# supported") while the cgroup2 mount is visible, so the whole loop runs in
# a private mount namespace with /sys/fs/cgroup/unified unmounted; runc and
# nodelet run in that same namespace. runc and crun create a cgroup per
# container; nodelet does not yet (the cgroups issue), so crun is also
# measured with --cgroup-manager=disabled, the like-for-like peer.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
bin=$PWD/target/release/nodelet
work=$(mktemp -d /tmp/nodelet-bench-rt-XXXXXX)
trap 'rm -rf "$work"' EXIT
for c in runc crun; do command -v "$c" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$c" >/dev/null; done
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/"
ln -s busybox "$work/rootfs/bin/true"
cargo run -q --release --example bundle -- "$work" true

cat >"$work/inner.sh" <<'INNER'
set -euo pipefail
work=$1 bin=$2 runs=$3
umount /sys/fs/cgroup/unified 2>/dev/null || true
now() { date +%s%N; }
declare -A T
for i in $(seq "$runs"); do
  s=$(now); "$bin" run-container "$work" </dev/null >/dev/null; T[nodelet]+=" $(( $(now) - s ))"
  s=$(now); runc run -b "$work" "bench-runc-$$-$i" </dev/null >/dev/null; T[runc]+=" $(( $(now) - s ))"
  s=$(now); crun run -b "$work" "bench-crun-$$-$i" </dev/null >/dev/null; T[crun]+=" $(( $(now) - s ))"
  s=$(now); crun --cgroup-manager=disabled run -b "$work" "bench-crun-nocg-$$-$i" </dev/null >/dev/null; T[crun_nocgroup]+=" $(( $(now) - s ))"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
n=$(echo "${T[nodelet]}" | median)
echo
echo "## container run of /bin/true (create+start+wait+remove), median of $runs (ms)"
printf '%-14s %10s %14s\n' tool median_ms "nodelet/tool"
for k in nodelet runc crun crun_nocgroup; do
  m=$(echo "${T[$k]}" | median)
  printf '%-14s %10.2f %14.2f\n' "$k" "$(python3 -c "print($m/1e6)")" "$(python3 -c "print($n/$m)")"
done
INNER
unshare -m bash "$work/inner.sh" "$work" "$bin" "$RUNS"
