//go:build tools

// Package testbin pins the Kubernetes binaries the tests need. It is its own module so that
// the k8s.io/kubernetes dependency graph never leaks into the product's go.mod.
package testbin

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
