#!/usr/bin/env bash
# Cleans up after a real-node run that could not tear itself down (e.g. killed): stops the
# processes by their recorded PIDs, then removes mounts, Pod network namespaces, kubepods
# cgroups, the cni0 bridge and the tools' network namespace. Normally the test does all this itself.
set -u
dir=/tmp/connectors-e2e
for name in tekton-controller tekton-webhook driver controller kubelet controller-manager scheduler containerd; do
  f=$dir/$name.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null && for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null
done
awk -v r="$dir" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
for n in $(ls /var/run/netns 2>/dev/null | grep '^cni-'); do umount -l "/var/run/netns/$n" 2>/dev/null; rm -f "/var/run/netns/$n"; done
for c in /sys/fs/cgroup/*/kubepods; do [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null; done
ip link show cni0 >/dev/null 2>&1 && ip link delete cni0
ip netns delete connectors-e2e-tools 2>/dev/null
ip link delete ce2e-tools 2>/dev/null
rm -rf "$dir" /var/lib/cni/networks/e2e
echo "e2e: cleaned up"
