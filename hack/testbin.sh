#!/usr/bin/env bash
# Provides the Kubernetes test control plane binaries (kube-apiserver, kubectl, etcd) in a cache
# outside the clone, so that every clone on this machine (and CI) builds them once.
# Prints the directory to use as KUBEBUILDER_ASSETS on its last line.
set -euo pipefail

K8S_VERSION=1.37.2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${CONNECTORS_TESTBIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/connectors-csi/k8s-$K8S_VERSION}
mkdir -p "$dir"

log() { echo "testbin: $*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then log "need root to apt-get install $*"; exit 1; fi
  log "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# etcd: Debian's etcd-server (3.4) works with this kube-apiserver. git: the tests run a real Git
# server (git http-backend) and client.
missing=()
[ -x /usr/bin/etcd ] || missing+=(etcd-server)
[ -x /usr/lib/git-core/git-http-backend ] || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
ln -sfn /usr/bin/etcd "$dir/etcd"

# kube-apiserver and kubectl (and kubelet, kube-scheduler and kube-controller-manager for the
# real-node lane, TESTBIN_KUBELET=1) from the k8s.io/kubernetes module, stamped with the real
# version (an unstamped v0.0.0-master is not parsable by kubectl and client-go discovery).
cmds=(kube-apiserver kubectl)
[ "${TESTBIN_KUBELET:-0}" = 1 ] && cmds+=(kubelet kube-scheduler kube-controller-manager)
need_build=0
for b in "${cmds[@]}"; do
  [ -x "$dir/$b" ] || need_build=1
done
if [ "$need_build" = 1 ]; then
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*}"
  minor=${K8S_VERSION#*.}; ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  log "building ${cmds[*]} v$K8S_VERSION (about 6-12 minutes on 2 cores the first time)"
  start=$(date +%s)
  pkgs=()
  for b in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  (cd "$here/testbin" && go build -trimpath -ldflags "$ldflags" -o "$dir/" "${pkgs[@]}")
  log "built in $(( $(date +%s) - start ))s into $dir"
fi
echo "$dir"
