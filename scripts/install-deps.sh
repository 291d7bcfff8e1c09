#!/usr/bin/env bash
# Installs the Debian packages nodelet's tests and benchmarks need, only the
# ones that are missing, non-interactively. Safe to run repeatedly.
set -euo pipefail

packages=(
  busybox-static   # test images are built from it, offline
  docker-registry  # the Distribution registry, on loopback
  skopeo           # pushes test images into the registry
  apache2-utils    # htpasswd (bcrypt) for the authenticated registry
  iproute2 util-linux procps
  libseccomp-dev   # nodelet links libseccomp (seccomp profiles compiled as runc/crun do)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a registry on :5000 as a service; tests start
# their own on free ports, so stop the packaged one if systemd runs here.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
