#!/usr/bin/env bash
# Pod start benchmark: a pod with one init container (`true`) and one app
# (`sleep`), image cached, from launch until the app is running and Ready
# (no readiness probe), median of $RUNS runs, interleaved:
#   nodelet run POD.yaml   (until it prints "Started container app")
#   podman kube play POD.yaml   (returns once the containers started;
#                                cgroupfs manager, runc, same image)
# restartPolicy OnFailure: podman 4.3 takes ~20 s per play for a pod with
# init containers under Always. Then 110 such pods at once under one
# `nodelet run`: time until all 110 apps started, and the RSS of nodelet.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
bin=$PWD/target/release/nodelet
work=$(mktemp -d /tmp/nodelet-bench-pod-XXXXXX)
cleanup() {
  podman --root "$work/p" --runroot "$work/pr" pod rm -af >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
for c in podman runc skopeo catatonit; do command -v "$c" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$c" >/dev/null; done
cargo run -q --release --example testbed -- "$work/layout" >/dev/null
N="$bin --root $work/n --socket $work/run/nodelet.sock --log-dir $work/logs"
$N image import "$work/layout" --name busybox-1 >/dev/null
# podman on this machine: ulimits at or below the hard limits, cgroupfs, runc.
cat >"$work/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "none"
CONF
export CONTAINERS_CONF=$work/containers.conf
P="podman --root $work/p --runroot $work/pr --storage-driver overlay"
skopeo copy -q "oci:$work/layout:busybox-1" "containers-storage:[overlay@$work/p+$work/pr]localhost/busybox-1:latest" >/dev/null

pod() { # name image
  cat <<POD
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 0
  initContainers: [{name: init, image: $2, imagePullPolicy: IfNotPresent, command: ["true"]}]
  containers: [{name: app, image: $2, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
POD
}
pod bench docker.io/library/busybox-1:latest >"$work/nodelet.yaml"
pod bench localhost/busybox-1:latest >"$work/podman.yaml"
for i in $(seq 110); do pod "p$i" docker.io/library/busybox-1:latest; echo ---; done >"$work/many.yaml"

# Runs `nodelet run FILE` until COUNT apps started; prints ms and peak RSS KiB.
cat >"$work/measure.py" <<'PY'
import os, signal, subprocess, sys, time
cmd, count = sys.argv[1].split(), int(sys.argv[2])
t0 = time.perf_counter()
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
seen = 0
for line in p.stderr:
    if "Started container app" in line:
        seen += 1
        if seen == count:
            break
ms = (time.perf_counter() - t0) * 1000
rss = 0
with open(f"/proc/{p.pid}/status") as f:
    for l in f:
        if l.startswith("VmRSS:"):
            rss = int(l.split()[1])
p.send_signal(signal.SIGTERM)
for _ in p.stderr:
    pass
p.wait()
print(f"{ms:.1f} {rss}")
PY
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s%N; }
tn="" tp=""
for i in $(seq "$RUNS"); do
  tn+=" $(python3 "$work/measure.py" "$N run $work/nodelet.yaml" 1 | cut -d' ' -f1)"
  s=$(now); $P kube play "$work/podman.yaml" >/dev/null; tp+=" $(python3 -c "print(($(now) - $s)/1e6)")"
  $P kube down "$work/podman.yaml" >/dev/null 2>&1
done
n=$(echo "$tn" | median) p=$(echo "$tp" | median)
echo
echo "## pod start to Ready (1 init + 1 app, cached image), median of $RUNS (ms)"
printf '%-22s %10s %14s\n' tool median_ms "nodelet/tool"
printf '%-22s %10.1f %14.3f\n' "nodelet run" "$n" 1
printf '%-22s %10.1f %14.3f\n' "podman kube play" "$p" "$(python3 -c "print($n/$p)")"
read -r ms rss < <(python3 "$work/measure.py" "$N run $work/many.yaml" 110)
echo
echo "## 110 pods at once (nodelet run): all apps started in ${ms} ms; nodelet RSS $((rss / 1024)) MiB"
