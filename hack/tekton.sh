#!/usr/bin/env bash
# Provides Tekton Pipelines for the real-node lane: the controller, webhook, entrypoint and nop
# binaries built from github.com/tektoncd/pipeline (pinned in hack/tekton/go.mod) and the
# release's config/ (namespace, CRDs, ConfigMaps, webhook configurations), in a cache outside the
# clone so that every clone on this machine builds them once. Prints the directory on its last
# line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(cd "$here/tekton" && go list -m -f '{{.Version}}' github.com/tektoncd/pipeline)
dir=${CONNECTORS_TEKTON_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/connectors-csi/tekton-$version}
mkdir -p "$dir"

log() { echo "tekton: $*" >&2; }

cmds=(controller webhook entrypoint nop)
need_build=0
for b in "${cmds[@]}"; do
  [ -x "$dir/$b" ] || need_build=1
done
if [ "$need_build" = 1 ]; then
  log "building Tekton Pipelines $version ${cmds[*]} (about 2.5 minutes on 2 cores the first time)"
  start=$(date +%s)
  pkgs=()
  for b in "${cmds[@]}"; do pkgs+=("github.com/tektoncd/pipeline/cmd/$b"); done
  # Static binaries: entrypoint and nop run inside images that have no C library.
  (cd "$here/tekton" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir/" "${pkgs[@]}")
  log "built in $(( $(date +%s) - start ))s into $dir"
fi
# go list reports no directory for a module that is not downloaded (binaries cached, module
# cache cleaned), so download it first.
(cd "$here/tekton" && go mod download github.com/tektoncd/pipeline)
src=$(cd "$here/tekton" && go list -m -f '{{.Dir}}' github.com/tektoncd/pipeline)
[ -d "$src/config" ] || { log "no config/ in the Tekton module at '$src'"; exit 1; }
rm -rf "$dir/config" && mkdir -p "$dir/config"
cp -r "$src/config/100-namespace" "$src/config/300-crds" "$dir/config/"
cp "$src"/config/config-*.yaml "$src/config/500-webhooks.yaml" "$dir/config/"
chmod -R u+w "$dir/config"
echo "$dir"
