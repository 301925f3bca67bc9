//go:build realnode

package realnode

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	iofs "io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

// files is an image's content: path in the image → path on the host ("" for a directory,
// "->target" for a symlink).
type files map[string]string

// writeLayer tars the files, owned by root, into w; file contents are streamed (a JDK is
// hundreds of MiB).
func writeLayer(fs files, w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, dst := range slices.Sorted(maps.Keys(fs)) {
		if err := writeEntry(tw, dst, fs[dst]); err != nil {
			return err
		}
	}
	return tw.Close()
}

// writeEntry writes one entry of writeLayer.
func writeEntry(tw *tar.Writer, dst, src string) error {
	h := &tar.Header{Name: dst, Mode: 0o755}
	switch {
	case src == "":
		h.Typeflag, h.Name = tar.TypeDir, dst+"/"
		if dst == "tmp" {
			h.Mode = 0o1777 // as on any system: containers running as another user write there
		}
		return tw.WriteHeader(h)
	case strings.HasPrefix(src, "->"):
		h.Typeflag, h.Linkname = tar.TypeSymlink, src[2:]
		return tw.WriteHeader(h)
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	h.Typeflag, h.Size, h.Mode = tar.TypeReg, fi.Size(), int64(fi.Mode().Perm())
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// buildImage writes a single-layer image as a docker-save tarball for `ctr images import`:
// there is no registry on this machine.
func buildImage(fs files, ref, out string, entrypoint ...string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	layerTar := out + ".layer"
	f, err := os.Create(layerTar)
	if err != nil {
		return err
	}
	defer os.Remove(layerTar)
	if err := writeLayer(fs, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	l, err := tarball.LayerFromFile(layerTar, tarball.WithCompressionLevel(gzip.BestSpeed))
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
	return tarball.WriteToFile(out, tag, img)
}

// fixed is an image's files known in advance.
func fixed(fs files) func() (files, error) { return func() (files, error) { return fs, nil } }

// busybox is a shell image from Debian's busybox-static.
func busybox() files {
	fs := files{"bin": "", "tmp": "", "etc": "", "bin/busybox": "/bin/busybox"}
	for _, a := range []string{"sh", "cat", "ls", "grep", "wget", "env", "echo", "test", "sleep", "wc", "find", "id", "cp", "mkdir", "cmp", "touch", "chmod",
		"dirname", "basename", "expr", "tr", "uname", "cut", "head", "tail", "sed", "sha256sum", "rm", "printf", "pwd"} {
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

// gitImage is busybox plus Debian's git and the libraries its binaries load.
func gitImage() (files, error) {
	fs := busybox()
	bins := map[string]string{
		"usr/bin/git": "/usr/bin/git", "usr/lib/git-core/git": "/usr/lib/git-core/git",
		"usr/lib/git-core/git-remote-http": "/usr/lib/git-core/git-remote-http",
	}
	for dst, src := range bins {
		fs.add(dst, src)
	}
	if err := fs.addLibraries(slices.Collect(maps.Values(bins))...); err != nil {
		return nil, err
	}
	fs["usr/lib/git-core/git-remote-https"] = "->git-remote-http"
	return fs, nil
}

// mavenImage is busybox plus Debian's maven and the JDK it runs on (what `java` resolves to),
// without the JDK's development parts, and the libraries its binaries load.
func mavenImage() (files, error) {
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("java is missing: run hack/tools.sh")
	}
	if java, err = filepath.EvalSymlinks(java); err != nil {
		return nil, err
	}
	mvn, err := filepath.EvalSymlinks("/usr/bin/mvn")
	if err != nil {
		return nil, fmt.Errorf("mvn is missing: run hack/tools.sh")
	}
	jdk := filepath.Dir(filepath.Dir(java))
	fs := busybox()
	for _, part := range []string{"bin", "conf", "lib", "release"} {
		if err := fs.addTree(filepath.Join(jdk, part)); err != nil {
			return nil, err
		}
	}
	for _, dir := range []string{filepath.Dir(filepath.Dir(mvn)), "/usr/share/java", "/etc/maven"} {
		if err := fs.addTree(dir); err != nil {
			return nil, err
		}
	}
	fs.followLinks()
	var elfs []string
	for dst, src := range fs {
		if strings.HasPrefix(dst, strings.TrimPrefix(jdk, "/")+"/") && (strings.HasSuffix(dst, ".so") || strings.Contains(dst, "/bin/")) && !strings.HasPrefix(src, "->") && src != "" {
			elfs = append(elfs, src)
		}
	}
	if err := fs.addLibraries(elfs...); err != nil {
		return nil, err
	}
	fs.add("usr/bin/java", "->"+java)
	fs.add("usr/bin/mvn", "->"+mvn)
	return fs, nil
}

// nodeImage is busybox plus node, npm's package (where the npm command resolves to) and, on
// Debian, the packaged modules npm loads from /usr/share/nodejs.
func nodeImage() (files, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("node is missing: run hack/tools.sh")
	}
	npmPath, err := exec.LookPath("npm")
	if err != nil {
		return nil, fmt.Errorf("npm is missing: run hack/tools.sh")
	}
	npmCLI, err := filepath.EvalSymlinks(npmPath)
	if err != nil {
		return nil, err
	}
	if node, err = filepath.EvalSymlinks(node); err != nil {
		return nil, err
	}
	fs := busybox()
	fs.add("usr/bin/node", node)
	if err := fs.addLibraries(node); err != nil {
		return nil, err
	}
	// npm-cli.js is <package>/bin/npm-cli.js.
	if err := fs.addTree(filepath.Dir(filepath.Dir(npmCLI))); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/usr/share/nodejs"); err == nil {
		if err := fs.addTree("/usr/share/nodejs"); err != nil {
			return nil, err
		}
	}
	fs.followLinks()
	fs.add("usr/bin/npm", "->"+npmCLI)
	fs.add("usr/bin/env", "->/bin/busybox") // npm-cli.js starts with #!/usr/bin/env node
	return fs, nil
}

// add adds one entry at dst (a path in the image) and the directories above it.
func (fs files) add(dst, src string) {
	dst = strings.Trim(dst, "/")
	fs[dst] = src
	for d := filepath.Dir(dst); d != "." && d != "/"; d = filepath.Dir(d) {
		if _, ok := fs[d]; ok {
			return
		}
		fs[d] = ""
	}
}

// addTree adds a host file or directory tree at the same path in the image, symbolic links
// as links.
func (fs files) addTree(root string) error {
	return filepath.WalkDir(root, func(path string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			fs.add(path, "")
		case d.Type()&iofs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			fs.add(path, "->"+target)
		case d.Type().IsRegular():
			fs.add(path, path)
		}
		return nil
	})
}

// followLinks adds what the image's links point to when it exists on the host and is not in
// the image yet (a JDK links its configuration to /etc), until nothing is missing.
func (fs files) followLinks() {
	for added := true; added; {
		added = false
		for dst, src := range fs {
			target, ok := strings.CutPrefix(src, "->")
			if !ok {
				continue
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join("/", filepath.Dir(dst), target)
			}
			if _, in := fs[strings.TrimPrefix(filepath.Clean(target), "/")]; in {
				continue
			}
			if _, err := os.Stat(target); err != nil {
				continue // dangling on the host too (documentation, sources)
			}
			if err := fs.addTree(target); err == nil {
				added = true
			}
		}
	}
}

// addLibraries adds the shared libraries the ELF files load, as ldd finds them (a file ldd
// does not understand is skipped).
func (fs files) addLibraries(elfs ...string) error {
	for _, src := range elfs {
		out, err := exec.Command("ldd", src).Output()
		if err != nil {
			continue // not a dynamic executable (a script, a static binary)
		}
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					f = filepath.Clean(f) // ldd prints a library next to its binary as <bin dir>/../lib/...
					fs.add(f, f)
				}
			}
		}
	}
	return nil
}

// driverImage builds the driver's image with make image's builder (hack/image) for this
// platform, named for containerd's import, and tars its OCI layout to out; it returns the
// image index's digest, which make release pins.
func driverImage(work, out string) (string, error) {
	dir := filepath.Join(work, "driver-layout")
	cmd := exec.Command("go", "run", "./hack/image", "-platforms", "linux/"+runtime.GOARCH, "-out", dir,
		"-version", "e2e", "-name", "localhost/connectors-csi:e2e")
	cmd.Dir = controlplane.RepoRoot()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	digest, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/image: %v\n%s", err, stderr.String())
	}
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return strings.TrimSpace(string(digest)), nil
}
