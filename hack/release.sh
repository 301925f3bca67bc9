#!/usr/bin/env bash
# Renders dist/install.yaml: deploy/base with the connectors-csi image pinned by digest, for
# `kubectl apply -f dist/install.yaml`. The digest is DIGEST, else the one `make image` wrote to
# dist/image.digest; the repository is IMAGE_REPO (default connectors-csi, for an image
# imported into the nodes' runtime from dist/image). OUT overrides the output file.
set -euo pipefail
cd "$(dirname "$0")/.."
digest=${DIGEST:-$(cat dist/image.digest 2>/dev/null || true)}
if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "hack/release.sh: no image digest (run make image, or set DIGEST=sha256:...)" >&2
  exit 1
fi
repo=${IMAGE_REPO:-connectors-csi}
out=${OUT:-dist/install.yaml}
overlay=$(mktemp -d dist/release.XXXXXX 2>/dev/null || { mkdir -p dist && mktemp -d dist/release.XXXXXX; })
trap 'rm -rf "$overlay"' EXIT
cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../deploy/base]
images:
  - name: connectors-csi
    newName: $repo
    digest: $digest
YAML
kubectl=$(hack/testbin.sh | tail -n1)/kubectl
mkdir -p "$(dirname "$out")"
"$kubectl" kustomize "$overlay" >"$out"
echo "$out: $repo@$digest" >&2
