#!/usr/bin/env bash
# Removes what a crashed test run may leave behind: test registries, the
# nodelet processes of test nodes (their roots are /tmp/nodelet-test-*),
# and mounts under those roots. Another nodelet on this machine, even one
# started from target/, is not touched.
set -u
pkill -f 'nodelet .*/tmp/nodelet-test-' 2>/dev/null || true
pkill -f 'docker-registry serve .*nodelet-test' 2>/dev/null || true
awk '$5 ~ /\/tmp\/nodelet-test/ {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null || true
done
rm -rf /tmp/nodelet-test-* 2>/dev/null || true
# Test cgroups (`/nodelet-test-*` roots, `/nodelet-test-<pid>-*` of unit
# tests): thaw, kill what is in them, remove them children first.
for root in /sys/fs/cgroup/*/nodelet-test-* /sys/fs/cgroup/nodelet-test-*; do
  [ -d "$root" ] || continue
  find "$root" -name freezer.state -exec sh -c 'echo THAWED > "$1"' _ {} \; 2>/dev/null
  find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
done
sleep 0.2
for root in /sys/fs/cgroup/*/nodelet-test-* /sys/fs/cgroup/nodelet-test-*; do
  [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null
done
true
