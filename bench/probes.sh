#!/usr/bin/env bash
# Probe and termination benchmarks (issue "Probes, hooks and graceful
# termination"), release build, image cached:
# (a) probe overhead: $PODS pods, each an httpd with an exec liveness probe
#     every second and an HTTP readiness probe every second, for $SECONDS_
#     seconds once all are Ready, $RUNS times (medians reported): CPU of
#     nodelet and of every shim as % of one core, the probe commands the
#     shims reap, their PSS, and the node's idle share meanwhile against
#     the same pods without probes. nodelet's CPU is its utime + stime
#     (every thread, dead ones included); the shims' is the scheduler's
#     exact on-CPU time (/proc/PID/schedstat): a shim runs ~50 us at a
#     time, which the tick-sampled utime/stime misses or over-counts at
#     random (they read 1.7-2.3 % where schedstat reads 3.0 in one run).
#     Peers in the same run: the same execs spawned bare on the host, and
#     the same HTTP exchange made by a bare client inside one pod's
#     network namespace (its kernel time is the floor of a probe's TCP
#     work: connect, send, receive, close on loopback).
# (b) SIGKILL precision: one pod of $KILLS containers that ignore their
#     stop signal, terminationGracePeriodSeconds 2; `nodelet delete` at t0;
#     each container's SIGKILL is seen by polling /proc every 0.2 ms for
#     the task to start exiting (PF_EXITING); lateness = that - (t0 + 2 s).
#     t0 is taken before the CLI starts, so the figures include the CLI
#     and API round trip (conservative).
set -euo pipefail
cd "$(dirname "$0")/.."
PODS=${PODS:-100}
SECONDS_=${SECONDS_:-60}
KILLS=${KILLS:-50}
RUNS=${RUNS:-3}
bin=$PWD/target/release/nodelet
work=$(mktemp -d /tmp/nodelet-bench-probe-XXXXXX)
cleanup() {
  [ -n "${runpid:-}" ] && kill "$runpid" 2>/dev/null && wait "$runpid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo run -q --release --example testbed -- "$work/layout" >/dev/null
"$bin" --root "$work/n" image import "$work/layout" --name busybox-1 >/dev/null 2>&1
ref=docker.io/library/busybox-1:latest
N="$bin --root $work/n --socket $work/nodelet.sock --log-dir $work/logs"

pods() { # probes: yes|no
  for i in $(seq "$PODS"); do
    cat <<POD
apiVersion: v1
kind: Pod
metadata: {name: p$i}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: $ref
    imagePullPolicy: IfNotPresent
    command: [httpd, -f, -p, "8080", -h, /etc]
POD
    if [ "$1" = yes ]; then
      cat <<POD
    livenessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
    readinessProbe: {httpGet: {path: /hostname, port: 8080}, periodSeconds: 1}
POD
    fi
    echo ---
  done
}

# Starts `nodelet run FILE`, waits until every pod is Ready, then samples
# CPU and RSS of nodelet + shims and the node's idle share for SECONDS_.
measure() {
  [ "${SKIP_OVERHEAD:-}" = 1 ] && { echo "0 0 0 0 0 0 0 0"; return; }
  $N run "$1" >/dev/null 2>&1 &
  runpid=$!
  until [ "$($N get pods 2>/dev/null | awk 'NR>1 && $2=="1/1"' | wc -l)" -ge "$PODS" ]; do sleep 0.5; done
  sleep 2
  local out
  out=$(python3 - "$runpid" "$work" "$SECONDS_" <<'PY'
import os, sys, time
root, work, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
hz = os.sysconf("SC_CLK_TCK")
def procs():
    out = [root]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ")
            except OSError:
                continue
            if b" shim " in cmd and work.encode() in cmd:
                out.append(int(p))
    return out
def oncpu(pids):
    # Exact on-CPU nanoseconds of single-threaded processes (the shims).
    t = 0
    for p in pids:
        try:
            t += int(open(f"/proc/{p}/schedstat").read().split()[0])
        except OSError:
            pass
    return t
def ticks(pids, fields):
    t = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            t += sum(int(f[i]) for i in fields)
        except OSError:
            pass
    return t
OWN, REAPED = (11, 12), (13, 14)  # utime stime; cutime cstime
def sample(pids):
    return (ticks(pids[:1], OWN) / hz, oncpu(pids[1:]) / 1e9, ticks(pids, REAPED) / hz)
def rss(pids):
    kb = 0
    for p in pids:
        try:
            for l in open(f"/proc/{p}/smaps_rollup"):
                if l.startswith("Pss:"):
                    kb += int(l.split()[1])
        except OSError:
            pass
    return kb
def idle():
    f = open("/proc/stat").readline().split()[1:]
    v = [int(x) for x in f]
    return v[3] + v[4], sum(v)
pids = procs()
t0, (i0, a0), w0 = sample(pids), idle(), time.time()
time.sleep(secs)
t1, (i1, a1), w1 = sample(pids), idle(), time.time()
pct = [(b - a) / (w1 - w0) * 100 for a, b in zip(t0, t1)]
print(f"{sum(pct):.2f} {pct[0]:.2f} {pct[1]:.2f} {pct[2]:.2f} "
      f"{rss(pids) / 1024:.1f} {(i1 - i0) / (a1 - a0) * 100:.1f} {len(pids) - 1}")
PY
)
  # The HTTP floor: the same GET, made $PODS times a second's worth by a
  # bare client in the first pod's network namespace; its kernel time.
  local shim http_floor
  shim=$(pgrep -f " shim .*$work" | head -1)
  http_floor=$(nsenter --net="/proc/$shim/ns/net" python3 - "$PODS" <<'PY'
import resource, socket, sys
n = 1000
req = b"GET /hostname HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
r0 = resource.getrusage(resource.RUSAGE_SELF)
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", 8080))
    s.sendall(req)
    while s.recv(4096):
        pass
    s.close()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(f"{(r1.ru_stime - r0.ru_stime) / n * int(sys.argv[1]) * 100:.2f}")
PY
)
  # Stopped before the figures go out: the caller starts the next run
  # as soon as it reads them.
  kill "$runpid"; wait "$runpid" 2>/dev/null || true; runpid=
  echo "$out $http_floor"
}

# The median of each column over the lines given.
medians() {
  python3 -c '
import statistics, sys
rows = [l.split() for l in sys.stdin if l.strip()]
print(" ".join(f"{statistics.median(float(r[i]) for r in rows):.2f}" for i in range(len(rows[0]))))'
}

pods yes >"$work/probed.yaml"
pods no >"$work/plain.yaml"
probed=$(for _ in $(seq "$RUNS"); do measure "$work/probed.yaml"; done)
echo "$probed" >&2
read -r cpu_p own_p shim_p reap_p pss_p idle_p shims http_floor < <(echo "$probed" | medians)
read -r cpu_n own_n shim_n reap_n pss_n idle_n _ _ < <(measure "$work/plain.yaml")
# The floor for the execs: the same command (busybox `true`) spawned
# directly on the host as often per second, no namespaces or cgroups.
floor=$(python3 - "$PODS" <<'PY'
import os, resource, shutil, sys
bb = shutil.which("busybox")
n = 1000
r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
for _ in range(n):
    os.waitpid(os.posix_spawn(bb, ["true"], {}), 0)
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
per = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / n
print(f"{per * int(sys.argv[1]) * 100:.2f}")
PY
)
echo
echo "## probe overhead: ${shims%.*} pods, exec liveness + HTTP readiness every 1 s, ${SECONDS_} s, median of $RUNS runs"
printf '%-26s %14s %14s\n' "" "with probes" "without"
agent_p=$(python3 -c "print(f'{$own_p + $shim_p:.2f}')")
agent_n=$(python3 -c "print(f'{$own_n + $shim_n:.2f}')")
printf '%-26s %14s %14s\n' "agent (nodelet + shims)" "$agent_p" "$agent_n"
printf '%-26s %14s %14s\n' "  with execs, % core" "$cpu_p" "$cpu_n"
printf '%-26s %14s %14s\n' "  nodelet" "$own_p" "$own_n"
printf '%-26s %14s %14s\n' "  shims" "$shim_p" "$shim_n"
printf '%-26s %14s %14s\n' "  execs (probe commands)" "$reap_p" "$reap_n"
printf '%-26s %14s %14s\n' "  (floor: same execs bare)" "$floor" "-"
printf '%-26s %14s %14s\n' "  (floor: same HTTP, kernel)" "$http_floor" "-"
printf '%-26s %14s %14s\n' "nodelet + shims, PSS MiB" "$pss_p" "$pss_n"
printf '%-26s %14s %14s\n' "node idle, %" "$idle_p" "$idle_n"

# (b) SIGKILL precision.
{
  echo "apiVersion: v1"; echo "kind: Pod"; echo "metadata: {name: stubborn}"
  echo "spec:"; echo "  terminationGracePeriodSeconds: 2"; echo "  containers:"
  for i in $(seq "$KILLS"); do echo "  - {name: c$i, image: $ref, imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}"; done
} >"$work/stubborn.yaml"
$N run "$work/stubborn.yaml" >/dev/null 2>&1 &
runpid=$!
until $N get pods stubborn 2>/dev/null | grep -q " $KILLS/$KILLS "; do sleep 0.2; done
uid=$($N get pod stubborn -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["uid"])')
python3 - "$uid" "$N" <<'PY'
import glob, os, subprocess, sys, time
uid, cli = sys.argv[1], sys.argv[2].split()
pids = []
for f in glob.glob(f"/sys/fs/cgroup/pids/nodelet/kubepods/besteffort/pod{uid}/*/cgroup.procs"):
    pids += [int(x) for x in open(f).read().split()]
PF_EXITING = 0x4
def alive(p):
    # The kill has landed once the task is exiting (PF_EXITING in its
    # flags): a PID namespace's init then still waits for the kernel to
    # tear the namespace down (tens of ms) before it is a zombie, and that
    # is not nodelet's lateness.
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return f[0] != "Z" and not int(f[6]) & PF_EXITING
t0 = time.time()
subprocess.run(cli + ["delete", "pod", "stubborn"], stdout=subprocess.DEVNULL, check=True)
cli_ms = (time.time() - t0) * 1000
deadline = t0 + 2.0
dead = {}
while len(dead) < len(pids) and time.time() < deadline + 10:
    now = time.time()
    for p in pids:
        if p not in dead and not alive(p):
            dead[p] = now
    time.sleep(0.0002)
late = sorted((t - deadline) * 1000 for t in dead.values())
early = [x for x in late if x < 0]
def pct(q):
    return late[min(len(late) - 1, int(q * len(late)))]
print()
print(f"## SIGKILL at the end of a 2 s grace period, {len(late)} containers (ms after the deadline)")
print(f"min {late[0]:.1f}  median {pct(0.5):.1f}  p99 {pct(0.99):.1f}  max {late[-1]:.1f}  early {len(early)}  (the delete command took {cli_ms:.1f})")
PY
wait "$runpid" 2>/dev/null || true
runpid=
