#!/usr/bin/env bash
# Renders dist/install.yaml: deploy/base with the connectors-csi image pinned by digest, for
# `kubectl apply -f dist/install.yaml`; and packages deploy/chart with the same image as its
# default (dist/connectors-csi-<chart version>.tgz, links resolved), for `helm install`. The digest is DIGEST, else the one `make image` wrote to
# dist/image.digest; the repository is IMAGE_REPO (default connectors-csi, for an image
# imported into the nodes' runtime from dist/image). OUT overrides the output file (the chart
# is written beside it).
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

# The chart: a copy with its links resolved and the image pinned in values.yaml, packaged by
# helm (built from its Go module by hack/tools/helm.sh).
helm=$(hack/tools/helm.sh | tail -n1)
chart="$overlay/chart"
cp -rL deploy/chart "$chart"
sed -i -e "s|^  repository: connectors-csi$|  repository: $repo|" -e "s|^  digest: \"\"$|  digest: \"$digest\"|" "$chart/values.yaml"
grep -q "^  digest: \"$digest\"$" "$chart/values.yaml" || { echo "hack/release.sh: could not pin the digest in the chart's values.yaml" >&2; exit 1; }
"$helm" package "$chart" --app-version "${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)}" -d "$(dirname "$out")" >&2
