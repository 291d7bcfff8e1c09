#!/usr/bin/env bash
# Image pull benchmark: pull + unpack of the `big` image (5 layers of
# incompressible data, ~100 MB compressed) from a loopback registry into a
# cold store, median of $RUNS runs, interleaved with the peers measured in
# the same run:
#   podman pull (overlay, fresh storage, cgroupfs), skopeo copy + umoci
#   unpack, and the floors `curl | gunzip | tar` per layer, serial and all
#   layers in parallel.
# Also the peak RSS of nodelet's pull (GNU time %M).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
bin=$PWD/target/release/nodelet
work=$(mktemp -d /tmp/nodelet-bench-XXXXXX)
reg_pid=
unmount_under() { awk '{print $5}' /proc/self/mountinfo | grep "^$1" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true; }
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; unmount_under "$work"; rm -rf "$work"; }
trap cleanup EXIT

need=()
for c in podman umoci skopeo docker-registry curl; do command -v "$c" >/dev/null || need+=("$c"); done
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  pkgs=("${need[@]/docker-registry/docker-registry}")
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

echo "building the big test image…" >&2
cargo run -q --release --example testbed -- "$work/layout" --big >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/reg.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/reg.yml" >/dev/null 2>&1 &
reg_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
ref=127.0.0.1:$port/nodelet/big:1
skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:$work/layout:big-1" "docker://$ref"
manifest=$(curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://127.0.0.1:$port/v2/nodelet/big/manifests/1")
layers=$(python3 -c 'import json,sys; print(" ".join(l["digest"] for l in json.loads(sys.argv[1])["layers"]))' "$manifest")
size=$(python3 -c 'import json,sys; print(sum(l["size"] for l in json.loads(sys.argv[1])["layers"]))' "$manifest")

now() { date +%s%N; }
declare -A T
rss=()
add() { T[$1]="${T[$1]:-} $2"; }

for run in $(seq "$RUNS"); do
  # nodelet
  rm -rf "$work/n"; sync
  s=$(now)
  /usr/bin/time -f %M -o "$work/rss" "$bin" --root "$work/n" image pull -q "$ref" >/dev/null
  add nodelet $(( $(now) - s )); rss+=("$(cat "$work/rss")")
  # podman
  unmount_under "$work/p"; rm -rf "$work/p" "$work/pr"; sync
  s=$(now)
  podman --root "$work/p" --runroot "$work/pr" --storage-driver overlay --cgroup-manager cgroupfs --events-backend none \
    pull -q --tls-verify=false "$ref" >/dev/null 2>&1
  add podman $(( $(now) - s ))
  # skopeo + umoci
  rm -rf "$work/o" "$work/b"; sync
  s=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/o:big" >/dev/null
  umoci unpack --image "$work/o:big" "$work/b" >/dev/null
  add skopeo_umoci $(( $(now) - s ))
  # floor: serial
  rm -rf "$work/f"; mkdir -p "$work/f"; sync
  s=$(now)
  i=0
  for l in $layers; do
    mkdir -p "$work/f/$i"
    curl -fs "http://127.0.0.1:$port/v2/nodelet/big/blobs/$l" | gunzip | tar -x -C "$work/f/$i"
    i=$((i + 1))
  done
  add floor_serial $(( $(now) - s ))
  # floor: all layers in parallel
  rm -rf "$work/f"; mkdir -p "$work/f"; sync
  s=$(now)
  i=0
  pids=()
  for l in $layers; do
    mkdir -p "$work/f/$i"
    (curl -fs "http://127.0.0.1:$port/v2/nodelet/big/blobs/$l" | gunzip | tar -x -C "$work/f/$i") &
    pids+=($!)
    i=$((i + 1))
  done
  wait "${pids[@]}"
  add floor_parallel $(( $(now) - s ))
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }
n=$(echo "${T[nodelet]}" | median)
echo
echo "## image pull: big image, $(( size / 1000000 )) MB compressed, 5 layers, cold store, median of $RUNS (ms)"
printf '%-16s %10s %14s\n' tool median_ms "nodelet/tool"
for k in nodelet podman skopeo_umoci floor_serial floor_parallel; do
  m=$(echo "${T[$k]}" | median)
  printf '%-16s %10d %14.2f\n' "$k" $(( m / 1000000 )) "$(python3 -c "print($n/$m)")"
done
printf 'nodelet peak RSS (KiB): median %s (runs: %s)\n' "$(echo "${rss[*]}" | median)" "${rss[*]}"
