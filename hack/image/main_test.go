package main

import (
	"archive/tar"
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/kube-connectors/connectors-csi/test/registry"
)

// TestImageIsReproducibleAndMultiPlatform builds a small program's image twice for two
// platforms: the same digest both times; the index holds each platform; each image runs the
// binary as the non-root user, with the CA certificates and a writable /tmp.
func TestImageIsReproducibleAndMultiPlatform(t *testing.T) {
	o := options{pkg: "github.com/kube-connectors/connectors-csi/test/realnode/pause", version: "v9.9.9-test",
		platforms: []string{"linux/amd64", "linux/arm64"}, epoch: time.Unix(1700000000, 0).UTC(), caFile: "testdata/ca.crt"}
	var digests []string
	for i := range 2 {
		o.out = filepath.Join(t.TempDir(), "layout")
		d, err := build(o)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
		if i > 0 {
			continue
		}
		lp, err := layout.FromPath(o.out)
		if err != nil {
			t.Fatal(err)
		}
		outer, err := lp.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		top, err := outer.IndexManifest()
		if err != nil || len(top.Manifests) != 1 || top.Manifests[0].Digest.String() != digests[0] ||
			top.Manifests[0].Annotations["io.containerd.image.name"] != "connectors-csi:v9.9.9-test" {
			t.Fatalf("the layout's index.json: %+v (%v), want one index of digest %s named connectors-csi:v9.9.9-test", top, err, digests[0])
		}
		idx, err := outer.ImageIndex(top.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		manifest, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(manifest.Manifests) != 2 {
			t.Fatalf("%d images in the index, want 2", len(manifest.Manifests))
		}
		for _, desc := range manifest.Manifests {
			img, err := idx.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Architecture != desc.Platform.Architecture || cf.Config.User != nonRoot || cf.Config.Entrypoint[0] != "/connectors-csi" {
				t.Errorf("%s: architecture %s, user %q, entrypoint %v", desc.Platform, cf.Architecture, cf.Config.User, cf.Config.Entrypoint)
			}
			files := layerFiles(t, img)
			if files[caBundle] != "CA certificates for the test\n" || files["connectors-csi"] == "" {
				t.Errorf("%s: the image holds %d bytes of CA certificates and %d of binary", desc.Platform, len(files[caBundle]), len(files["connectors-csi"]))
			}
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of the same source: %s and %s", digests[0], digests[1])
	}
}

// layerFiles reads the regular files of an image's filesystem.
func layerFiles(t *testing.T, img v1.Image) map[string]string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[h.Name] = string(b)
		}
	}
}

// TestImagePushesToARegistry pushes the index to a real registry (the distribution registry
// with token auth, on loopback) with the credentials of a Docker config, as make image does
// with IMAGE_REPO, and reads it back there by its tag: the printed digest.
func TestImagePushesToARegistry(t *testing.T) {
	reg, err := registry.Start(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	config := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(reg.Username + ":" + reg.Password))
	if err := os.WriteFile(filepath.Join(config, "config.json"), []byte(`{"auths": {"`+host+`": {"auth": "`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", config)
	o := options{pkg: "github.com/kube-connectors/connectors-csi/test/realnode/pause", version: "v9.9.9-push",
		platforms: []string{"linux/amd64", "linux/arm64"}, epoch: time.Unix(1700000000, 0).UTC(), caFile: "testdata/ca.crt",
		out: filepath.Join(t.TempDir(), "layout"), repo: host + "/connectors-csi"}
	digest, err := build(o)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(o.repo + ":" + o.version)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatalf("the pushed tag: %v", err)
	}
	if desc.Digest.String() != digest {
		t.Errorf("the registry has %s at %s, make image printed %s", desc.Digest, ref, digest)
	}
}
