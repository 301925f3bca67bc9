# Connectors CSI. `make demo` runs the product on a local control plane; `make test` runs the
# tests. Both build or install what they need (Go modules, Debian packages, the Kubernetes test
# binaries, cached under ~/.cache/connectors-csi).
SHELL := /usr/bin/env bash -o pipefail
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
LDFLAGS := -s -w -X github.com/kube-connectors/connectors-csi/driver.Version=$(VERSION)
CONTROLLER_GEN := go tool controller-gen
STATICCHECK := go tool staticcheck
TESTBIN = $(shell hack/testbin.sh | tail -n1)

# Fuzzers of what a tenant controls, as <package>:<Fuzz function>; seed corpora in
# <package>/testdata/fuzz/<Fuzz function>. `make test` runs each for a few seconds.
FUZZ_TARGETS := proxy:FuzzProxyCredentials proxy:FuzzCoverage render:FuzzValidateFileName node:FuzzParseAttributes \
  approval:FuzzCheckState
FUZZTIME ?= 1m

.PHONY: all build image release generate verify-generated lint test fuzz e2e e2e-down bench soak scale demo clean

all: build

build: ## bin/connectors-csi
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/connectors-csi ./cmd/connectors-csi

image: ## the image (linux/amd64, linux/arm64) as an OCI layout in dist/image, its digest in dist/image.digest; pushed as $(IMAGE_REPO):$(VERSION) when IMAGE_REPO is set
	mkdir -p dist
	go run ./hack/image -out dist/image -version $(VERSION) $(if $(IMAGE_REPO),-repo $(IMAGE_REPO)) > dist/image.digest
	@echo "image $$(cat dist/image.digest)"

release: image ## dist/install.yaml (deploy/base) and dist/connectors-csi-<chart version>.tgz (deploy/chart) with that image pinned by digest (IMAGE_REPO, default connectors-csi)
	VERSION=$(VERSION) hack/release.sh

generate: ## CRDs and deepcopy from apis/ with controller-gen
	$(CONTROLLER_GEN) object paths=./apis/...
	$(CONTROLLER_GEN) crd:crdVersions=v1 paths=./apis/... output:crd:artifacts:config=deploy/crds

verify-generated: generate ## fails when generated files are stale
	@if [ -n "$$(git status --porcelain -- apis deploy/crds)" ]; then \
	  git status --porcelain -- apis deploy/crds; git diff -- apis deploy/crds | head -50; \
	  echo "generated files are stale: run 'make generate' and commit the result" >&2; exit 1; fi

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out" >&2; exit 1; fi
	go vet -tags realnode,scale ./...
	$(STATICCHECK) -tags realnode,scale ./...

test: verify-generated lint build ## every test, against a real API server (tmpfs mounts when root), then each fuzzer briefly
	hack/tools.sh
	KUBEBUILDER_ASSETS=$(TESTBIN) go test -count=1 ./...
	@# A count, not a duration: a duration that ends while Go is still replaying the corpus
	@# (seeds plus what earlier runs cached in GOCACHE) fails with "context deadline exceeded".
	$(MAKE) --no-print-directory fuzz FUZZTIME=500x

fuzz: ## each fuzzer for FUZZTIME (1m, or a count such as 500x); a failing input is saved under testdata/fuzz: commit it as a regression test
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} (./$${t%%:*}, $(FUZZTIME))"; \
	  go test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) ./$${t%%:*}/ >/tmp/fuzz-$$$$.log 2>&1 || { cat /tmp/fuzz-$$$$.log; rm -f /tmp/fuzz-$$$$.log; exit 1; }; \
	  rm -f /tmp/fuzz-$$$$.log; \
	done

e2e: ## the real-node lane: kubelet + containerd + the driver + Tekton, real Pods (root)
	hack/e2e-deps.sh
	hack/tools.sh
	TESTBIN_KUBELET=1 hack/testbin.sh >/dev/null
	TEKTON_DIR=$$(hack/tekton.sh | tail -n1) KUBEBUILDER_ASSETS=$(TESTBIN) go test -tags realnode -count=1 -timeout 25m ./test/realnode/

e2e-down: ## clean up after a real-node run that was killed
	hack/e2e-down.sh

bench: build ## benchmarks: publish, gitrefs, approval latency (50 runs; 10 behind rechecks), the proxy against nginx with wrk and a Go generator (installs Debian's nginx and wrk)
	KUBEBUILDER_ASSETS=$(TESTBIN) go test -run '^$$' -bench 'Publish|GitRefs|ConnectorCache' -benchmem ./test/e2e/ ./connectorsapi/
	KUBEBUILDER_ASSETS=$(TESTBIN) go test -run '^$$' -bench 'Approval$$' -benchtime 50x ./test/e2e/
	KUBEBUILDER_ASSETS=$(TESTBIN) go test -run '^$$' -bench 'ApprovalBehindRechecks' -benchtime 10x ./test/e2e/
	command -v nginx >/dev/null && command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk)
	KUBEBUILDER_ASSETS=$(TESTBIN) go run ./test/bench/proxy
	KUBEBUILDER_ASSETS=$(TESTBIN) go run ./test/bench/memory

soak: build ## the proxy under 2,000 keep-alive clients, 500 CONNECT tunnels and misbehaving clients for 10 minutes (SOAK_ARGS="-d 2m" shortens it)
	KUBEBUILDER_ASSETS=$(TESTBIN) go run ./test/bench/soak $(SOAK_ARGS)

scale: ## the scale lane: 20 node processes and a controller against an API server with 10,000 Connectors, 5,000 Nodes, 50,000 Pods (about 25 minutes; SCALE_* variables shrink it)
	KUBEBUILDER_ASSETS=$(TESTBIN) go test -tags scale -count=1 -timeout 90m -run '^TestScale$$' -v ./test/e2e/ 2>&1 | grep -E '^(=== RUN|--- |ok|FAIL|PASS)|RESULT|_test.go:'

demo: build ## local control plane, driver, a Connector and a Pod's volume, printed
	KUBEBUILDER_ASSETS=$(TESTBIN) go run ./test/demo

clean:
	rm -rf bin
