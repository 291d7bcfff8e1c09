#!/usr/bin/env bash
# Removes what a crashed test run may leave behind: test registries and
# nodelet processes started from target/, and mounts under temp roots.
set -u
pkill -f 'target/(debug|release)/nodelet' 2>/dev/null || true
pkill -f 'docker-registry serve .*nodelet-test' 2>/dev/null || true
awk '$5 ~ /\/tmp\/nodelet-test/ {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null || true
done
rm -rf /tmp/nodelet-test-* 2>/dev/null || true
