//go:build tools

// Package helm pins the helm CLI the tests render deploy/chart with (helm template, helm lint).
// It is its own module so that Helm's dependency graph never leaks into the product's go.mod.
package helm

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
