#!/usr/bin/env bash
# Provides the helm CLI (built from helm.sh/helm/v3, pinned in hack/helm/go.mod) in a cache
# outside the clone, so that every clone on this machine builds it once. Prints the binary's path
# on its last line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(cd "$here/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
dir=${CONNECTORS_HELM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/connectors-csi/helm-$version}
mkdir -p "$dir"

if [ ! -x "$dir/helm" ]; then
  echo "helm: building helm $version (about a minute on 2 cores the first time)" >&2
  start=$(date +%s)
  (cd "$here/helm" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" -o "$dir/helm" helm.sh/helm/v3/cmd/helm)
  echo "helm: built in $(( $(date +%s) - start ))s into $dir" >&2
fi
echo "$dir/helm"
