#!/usr/bin/env bash
# Memory of idle per-pod shims: starts $SHIMS shims (release build) and
# reads /proc/<pid>/smaps_rollup of each. With several running, the binary's
# text is shared, so Private_* is what one more pod costs.
set -euo pipefail
cd "$(dirname "$0")/.."
SHIMS=${SHIMS:-10}
work=$(mktemp -d /tmp/nodelet-bench-shim-XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 - "$PWD/target/release/nodelet" "$work" "$SHIMS" <<'PY'
import os, socket, subprocess, sys, time, statistics
binary, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
shims = []
for i in range(n):
    st = f"{work}/pod{i}"
    os.makedirs(st)
    p = subprocess.Popen([binary, "shim", "--state-dir", st, "--hostname", f"pod{i}"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert p.stdout.readline().strip() == b"ready"
    shims.append((p, st))
time.sleep(0.5)
rows = []
for p, _ in shims:
    d = {}
    for line in open(f"/proc/{p.pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            d[parts[0][:-1]] = int(parts[1])
    rows.append((d["Private_Clean"] + d["Private_Dirty"], d["Private_Dirty"], d["Pss"], d["Rss"]))
for p, st in shims:
    s = socket.socket(socket.AF_UNIX)
    s.connect(f"{st}/shim.sock")
    s.sendall(b'{"v":1,"op":"shutdown"}\n')
    s.recv(100)
    p.wait()
med = lambda i: statistics.median(r[i] for r in rows)
print()
print(f"## idle shim memory, {n} shims running (KiB, median)")
print(f"private {med(0):.0f}  private_dirty {med(1):.0f}  pss {med(2):.0f}  rss {med(3):.0f}")
PY
