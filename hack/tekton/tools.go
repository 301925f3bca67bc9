//go:build tools

// Package tekton pins the Tekton Pipelines binaries the real-node lane runs (controller,
// webhook, entrypoint, nop). It is its own module so that Tekton's dependency graph never leaks
// into the product's go.mod.
package tekton

import (
	_ "github.com/tektoncd/pipeline/cmd/controller"
	_ "github.com/tektoncd/pipeline/cmd/entrypoint"
	_ "github.com/tektoncd/pipeline/cmd/nop"
	_ "github.com/tektoncd/pipeline/cmd/webhook"
)
