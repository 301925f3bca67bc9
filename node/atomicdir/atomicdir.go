// Package atomicdir writes a set of files into a directory so that a reader sees either the
// whole old set or the whole new set: the files live in a hidden data directory, the visible
// names are symlinks through one "..data" symlink, and an update swaps that symlink with a
// rename. It follows the layout kubelet uses for projected volumes; kubelet's writer is not a
// published library, so this is the project's own small version.
package atomicdir

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

const dataLink = "..data"

// tmpPrefix begins the names of the data directories.
const tmpPrefix = "..tmp_"

// Ownership is how written files and directories are owned.
type Ownership struct {
	// GID, when not nil, becomes the group of every file, and files get mode 0440.
	GID *int64
}

func (o Ownership) fileMode() os.FileMode {
	if o.GID != nil {
		return 0o440
	}
	return 0o444
}

func (o Ownership) dirMode() os.FileMode {
	if o.GID != nil {
		return 0o750
	}
	return 0o755
}

func (o Ownership) apply(path string, mode os.FileMode) error {
	if o.GID != nil {
		if err := os.Lchown(path, -1, int(*o.GID)); err != nil {
			return err
		}
	}
	return os.Chmod(path, mode)
}

// Write makes dir hold exactly files. Unchanged files keep their inode (they are hard-linked
// into the new data directory), and when nothing changed nothing is written at all. It reports
// whether anything changed.
func Write(dir string, files map[string][]byte, own Ownership) (bool, error) {
	old, err := currentDataDir(dir)
	if err != nil {
		return false, err
	}
	if old != "" && sameContent(filepath.Join(dir, old), files) {
		return false, nil
	}
	fresh, err := os.MkdirTemp(dir, tmpPrefix)
	if err != nil {
		return false, err
	}
	if err := fill(dir, old, fresh, files, own); err != nil {
		_ = os.RemoveAll(fresh)
		return false, err
	}
	if err := swapDataLink(dir, filepath.Base(fresh)); err != nil {
		_ = os.RemoveAll(fresh)
		return false, err
	}
	if err := syncVisibleLinks(dir, files); err != nil {
		return true, err
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			return true, err
		}
	}
	return true, nil
}

// Read returns the files currently visible in dir.
func Read(dir string) (map[string][]byte, error) {
	data, err := currentDataDir(dir)
	if err != nil || data == "" {
		return nil, err
	}
	root := filepath.Join(dir, data)
	out := map[string][]byte{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	return out, err
}

// currentDataDir returns the name of the data directory "..data" points at, or "".
func currentDataDir(dir string) (string, error) {
	target, err := os.Readlink(filepath.Join(dir, dataLink))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	// Only a directory this package made, in dir: the target is read from, linked from and,
	// after an update, removed whole, as the driver's user; one that names anything else (a
	// path out of the volume, a link to one) is refused rather than followed.
	if !strings.HasPrefix(target, tmpPrefix) || target != filepath.Base(target) {
		return "", fmt.Errorf("%s in %s points at %q, not a data directory of its own", dataLink, dir, target)
	}
	if fi, err := os.Lstat(filepath.Join(dir, target)); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s in %s points at %q, not a data directory of its own", dataLink, dir, target)
	}
	return target, nil
}

func sameContent(dataDir string, files map[string][]byte) bool {
	n := 0
	err := filepath.WalkDir(dataDir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil || n != len(files) {
		return false
	}
	for name, content := range files {
		old, err := os.ReadFile(filepath.Join(dataDir, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(old, content) {
			return false
		}
	}
	return true
}

// fill writes files into the fresh data directory, hard-linking those whose content equals the
// old data directory's copy.
func fill(dir, old, fresh string, files map[string][]byte, own Ownership) error {
	for name, content := range files {
		path := filepath.Join(fresh, filepath.FromSlash(name))
		if err := mkdirs(fresh, filepath.Dir(path), own); err != nil {
			return err
		}
		if old != "" {
			prev := filepath.Join(dir, old, filepath.FromSlash(name))
			if b, err := os.ReadFile(prev); err == nil && bytes.Equal(b, content) {
				if err := os.Link(prev, path); err == nil {
					continue
				}
			}
		}
		if err := os.WriteFile(path, content, 0o600); err != nil {
			return err
		}
		if err := own.apply(path, own.fileMode()); err != nil {
			return err
		}
	}
	return own.apply(fresh, own.dirMode())
}

// mkdirs creates path (below root) with the directory mode and ownership.
func mkdirs(root, path string, own Ownership) error {
	if path == root {
		return nil
	}
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := mkdirs(root, filepath.Dir(path), own); err != nil {
		return err
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		return err
	}
	return own.apply(path, own.dirMode())
}

func swapDataLink(dir, fresh string) error {
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(fresh, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, dataLink))
}

// syncVisibleLinks makes the top-level names of files symlinks into "..data" and removes
// visible names that are no longer part of the set.
func syncVisibleLinks(dir string, files map[string][]byte) error {
	want := map[string]bool{}
	for name := range files {
		want[strings.SplitN(name, "/", 2)[0]] = true
	}
	for _, top := range slices.Sorted(maps.Keys(want)) {
		link := filepath.Join(dir, top)
		if target, err := os.Readlink(link); err == nil && target == filepath.Join(dataLink, top) {
			continue
		}
		tmp := filepath.Join(dir, "..link_tmp")
		_ = os.Remove(tmp)
		if err := os.Symlink(filepath.Join(dataLink, top), tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, link); err != nil {
			return fmt.Errorf("publish %s: %w", top, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || want[e.Name()] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
