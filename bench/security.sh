#!/usr/bin/env bash
# What the security defaults cost a container start: create + start + wait
# + remove of /bin/true (busybox) in a cgroup of its own, median of $RUNS
# interleaved runs of `nodelet run-container` on three bundles:
#   plain    no seccomp, no device allowlist (what nodelet did before)
#   secure   containerd's default seccomp profile + the device allowlist
#            (what every pod container gets now)
# and `crun run` on the secure bundle (crun with the same defaults).
# run-container is a fresh process each run, so it compiles the profile
# every time; a pod's shim compiles it once and reuses it for the pod's
# later containers, restarts and execs. crun refuses this hybrid cgroup
# machine while the cgroup2 mount is visible: the loop runs in a private
# mount namespace with /sys/fs/cgroup/unified unmounted (as runtime.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-30}
bin=$PWD/target/release/nodelet
work=$(mktemp -d /tmp/nodelet-bench-sec-XXXXXX)
trap 'rm -rf "$work"' EXIT
command -v crun >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends crun >/dev/null
for b in plain secure; do
  mkdir -p "$work/$b/rootfs/bin"
  cp /bin/busybox "$work/$b/rootfs/bin/"
  ln -s busybox "$work/$b/rootfs/bin/true"
done
CGROUP=/nodelet-bench-sec/plain DEVICES=all cargo run -q --release --example bundle -- "$work/plain" true
CGROUP=/nodelet-bench-sec/secure SECCOMP=runtime-default cargo run -q --release --example bundle -- "$work/secure" true

cat >"$work/inner.sh" <<'INNER'
set -euo pipefail
work=$1 bin=$2 runs=$3
umount /sys/fs/cgroup/unified 2>/dev/null || true
now() { date +%s%N; }
declare -A T
run_plain() { s=$(now); "$bin" run-container "$work/plain" </dev/null >/dev/null; a=$(( $(now) - s )); T[nodelet_plain]+=" $a"; }
run_secure() { s=$(now); "$bin" run-container "$work/secure" </dev/null >/dev/null; b=$(( $(now) - s )); T[nodelet_secure]+=" $b"; }
for i in $(seq "$runs"); do
  # Each nodelet variant follows crun (whose cgroup removal slows the next
  # start) in every other round, so neither carries that cost alone.
  s=$(now); crun run -b "$work/secure" "bench-sec-$$-$i" </dev/null >/dev/null; T[crun_secure]+=" $(( $(now) - s ))"
  if (( i % 2 )); then run_plain; run_secure; else run_secure; run_plain; fi
  T[diff]+=" $(( b - a ))"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
p=$(echo "${T[nodelet_plain]}" | median)
s=$(echo "${T[nodelet_secure]}" | median)
c=$(echo "${T[crun_secure]}" | median)
echo
echo "## container run of /bin/true with and without the security defaults, median of $runs (ms)"
printf '%-16s %10s\n' run median_ms
for k in nodelet_plain nodelet_secure crun_secure; do
  m=$(echo "${T[$k]}" | median)
  printf '%-16s %10.2f\n' "$k" "$(python3 -c "print($m/1e6)")"
done
d=$(echo "${T[diff]}" | tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}')
printf 'security defaults add %.2f ms to nodelet (median of the per-run differences; goal <= 1 ms); nodelet_secure/crun_secure = %.2f\n' \
  "$(python3 -c "print($d/1e6)")" "$(python3 -c "print($s/$c)")"
INNER
unshare -m bash "$work/inner.sh" "$work" "$bin" "$RUNS"
for d in /sys/fs/cgroup/*/nodelet-bench-sec; do rmdir "$d"/* "$d" 2>/dev/null || true; done
