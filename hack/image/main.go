// Command image builds the connectors-csi image reproducibly, with go-containerregistry and no
// container runtime: the binary cross-compiled for each platform (static, trimmed paths, the
// version stamped in), the system CA certificates, a non-root default user (the controller
// role runs as it; the node DaemonSet sets root, which its mounts need), every file and the
// image's own dates at the commit's time. It writes an OCI image layout holding one index of the
// platforms, pushes the index when -repo is given, and prints its digest: the same source gives
// the same digest.
//
//	go run ./hack/image -out dist/image -version v1.2.3 [-repo registry.example.com/connectors-csi]
package main

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nonRoot is the image's default user and group (the distroless convention).
const nonRoot = "65532:65532"

// caBundle is where Debian keeps the system CA certificates, and where the image has them.
const caBundle = "etc/ssl/certs/ca-certificates.crt"

type options struct {
	pkg, out, version, repo, name string
	platforms                     []string
	epoch                         time.Time
	caFile                        string
}

func main() {
	var o options
	var platforms string
	var epoch int64
	flag.StringVar(&o.pkg, "pkg", "./cmd/connectors-csi", "the Go package of the binary")
	flag.StringVar(&o.out, "out", "dist/image", "directory of the OCI image layout (replaced)")
	flag.StringVar(&o.version, "version", "v0.0.0-dev", "version stamped into the binary")
	flag.StringVar(&o.repo, "repo", "", "push the index to this repository (tagged with the version) when set")
	flag.StringVar(&o.name, "name", "", "the image's name in the layout (io.containerd.image.name), for ctr images import; default <repo or connectors-csi>:<version>")
	flag.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "platforms, comma-separated")
	flag.Int64Var(&epoch, "epoch", sourceDateEpoch(), "the files' and the image's time (default: SOURCE_DATE_EPOCH, else the last commit's)")
	flag.StringVar(&o.caFile, "ca-certificates", "/"+caBundle, "CA certificates to put in the image")
	flag.Parse()
	o.platforms, o.epoch = strings.Split(platforms, ","), time.Unix(epoch, 0).UTC()
	digest, err := build(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Println(digest)
}

// sourceDateEpoch is SOURCE_DATE_EPOCH, else the last commit's time, else 0.
func sourceDateEpoch() int64 {
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		var n int64
		if _, err := fmt.Sscan(v, &n); err == nil {
			return n
		}
	}
	out, err := exec.Command("git", "log", "-1", "--format=%ct").Output()
	if err != nil {
		return 0
	}
	var n int64
	_, _ = fmt.Sscan(strings.TrimSpace(string(out)), &n)
	return n
}

// build makes the index, writes the layout, pushes if asked, and returns the index's digest.
func build(o options) (string, error) {
	ca, err := os.ReadFile(o.caFile)
	if err != nil {
		return "", fmt.Errorf("CA certificates: %w (Debian's ca-certificates package)", err)
	}
	work, err := os.MkdirTemp("", "connectors-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.platforms {
		platform, err := v1.ParsePlatform(p)
		if err != nil {
			return "", err
		}
		bin := filepath.Join(work, strings.ReplaceAll(p, "/", "-"))
		if err := compile(o, platform, bin); err != nil {
			return "", err
		}
		img, err := image(o, platform, bin, ca)
		if err != nil {
			return "", err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: platform}})
	}
	if err := writeLayout(o, idx); err != nil {
		return "", err
	}
	digest, err := idx.Digest()
	if err != nil {
		return "", err
	}
	if o.repo != "" {
		ref, err := name.NewTag(o.repo + ":" + o.version)
		if err != nil {
			return "", err
		}
		if err := remote.WriteIndex(ref, idx, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return "", fmt.Errorf("push %s: %w", ref, err)
		}
	}
	return digest.String(), nil
}

// writeLayout replaces o.out with an OCI image layout whose index.json names the image index
// (the tag, and the full name containerd's import gives the image).
func writeLayout(o options, idx v1.ImageIndex) error {
	if err := os.RemoveAll(o.out); err != nil {
		return err
	}
	lp, err := layout.Write(o.out, empty.Index)
	if err != nil {
		return err
	}
	name := o.name
	if name == "" {
		name = cmp.Or(o.repo, "connectors-csi") + ":" + o.version
	}
	return lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name": name, "org.opencontainers.image.ref.name": o.version}))
}

// compile builds the static binary for platform.
func compile(o options, p *v1.Platform, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X github.com/kube-connectors/connectors-csi/driver.Version="+o.version, "-o", out, o.pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for %s: %v\n%s", o.pkg, p, err, b)
	}
	return nil
}

// image is one platform's image: one layer (the binary, the CA certificates, /tmp) and a
// config with the entrypoint, the non-root user and the epoch as every date.
func image(o options, p *v1.Platform, bin string, ca []byte) (v1.Image, error) {
	binary, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	data, err := tarFiles(o.epoch, []file{
		{name: "etc/", mode: 0o755}, {name: "etc/ssl/", mode: 0o755}, {name: "etc/ssl/certs/", mode: 0o755},
		{name: caBundle, mode: 0o644, data: ca},
		{name: "tmp/", mode: 0o1777},
		{name: "connectors-csi", mode: 0o755, data: binary},
	})
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithCompressionLevel(gzip.BestCompression), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: o.epoch}, CreatedBy: "hack/image " + o.version}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: o.epoch}
	cf.Config.Entrypoint = []string{"/connectors-csi"}
	cf.Config.User = nonRoot
	cf.Config.Env = []string{"SSL_CERT_FILE=/" + caBundle}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.version": o.version,
		"org.opencontainers.image.source": "https://github.com/kube-connectors/connectors-csi"}
	return mutate.ConfigFile(img, cf)
}

type file struct {
	name string
	mode int64
	data []byte
}

// tarFiles tars the files in order, owned by root, all dated epoch.
func tarFiles(epoch time.Time, files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: epoch, Format: tar.FormatPAX}
		if strings.HasSuffix(f.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
