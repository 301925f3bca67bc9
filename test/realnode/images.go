//go:build realnode

package realnode

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// files is an image's content: path in the image → path on the host ("" for a directory,
// "->target" for a symlink).
type files map[string]string

// layer tars the files, owned by root.
func layer(fs files) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for dst, src := range fs {
		h := &tar.Header{Name: dst, Mode: 0o755}
		switch {
		case src == "":
			h.Typeflag, h.Name = tar.TypeDir, dst+"/"
			if dst == "tmp" {
				h.Mode = 0o1777 // as on any system: containers running as another user write there
			}
		case len(src) > 2 && src[:2] == "->":
			h.Typeflag, h.Linkname = tar.TypeSymlink, src[2:]
		default:
			b, err := os.ReadFile(src)
			if err != nil {
				return nil, err
			}
			fi, err := os.Stat(src)
			if err != nil {
				return nil, err
			}
			h.Typeflag, h.Size, h.Mode = tar.TypeReg, int64(len(b)), int64(fi.Mode().Perm())
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			if _, err := tw.Write(b); err != nil {
				return nil, err
			}
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// buildImage writes a single-layer image as a docker-save tarball for `ctr images import`:
// there is no registry on this machine.
func buildImage(fs files, ref, out string, entrypoint ...string) error {
	data, err := layer(fs)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	// containerd's import filters by platform; an image without one is dropped.
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: entrypoint, Env: []string{"PATH=/bin:/usr/bin"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return tarball.WriteToFile(out, tag, img)
}

// busybox is a shell image from Debian's busybox-static.
func busybox() files {
	fs := files{"bin": "", "tmp": "", "etc": "", "bin/busybox": "/bin/busybox"}
	for _, a := range []string{"sh", "cat", "ls", "grep", "wget", "env", "echo", "test", "sleep", "wc", "find", "id", "cp", "mkdir", "cmp", "touch", "chmod"} {
		fs["bin/"+a] = "->busybox"
	}
	return fs
}

// randomImage writes a small random image as a tarball, for a Pod to push.
func randomImage(out string) error {
	img, err := random.Image(256<<10, 2)
	if err != nil {
		return err
	}
	tag, err := name.NewTag("localhost/payload:v1")
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, tag, img)
}

// gitImage is busybox plus Debian's git and the libraries its binaries load (found with ldd).
func gitImage() (files, error) {
	fs := busybox()
	for _, d := range []string{"usr", "usr/bin", "usr/lib", "usr/lib/git-core", "lib", "lib64", "lib/x86_64-linux-gnu", "etc/ssl"} {
		fs[d] = ""
	}
	bins := map[string]string{
		"usr/bin/git": "/usr/bin/git", "usr/lib/git-core/git": "/usr/lib/git-core/git",
		"usr/lib/git-core/git-remote-http": "/usr/lib/git-core/git-remote-http",
	}
	for dst, src := range bins {
		fs[dst] = src
		out, err := exec.Command("ldd", src).Output()
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", src, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					fs[strings.TrimPrefix(f, "/")] = f
				}
			}
		}
	}
	fs["usr/lib/git-core/git-remote-https"] = "->git-remote-http"
	return fs, nil
}
