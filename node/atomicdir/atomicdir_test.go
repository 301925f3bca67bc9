package atomicdir

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestWriteSwapsAndKeepsUnchangedFiles(t *testing.T) {
	dir := t.TempDir()
	changed, err := Write(dir, map[string][]byte{"a": []byte("1"), "b": []byte("2"), "sub/c": []byte("3")}, Ownership{})
	if err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	inoA, inoB := inode(t, filepath.Join(dir, "a")), inode(t, filepath.Join(dir, "b"))

	changed, err = Write(dir, map[string][]byte{"a": []byte("1"), "b": []byte("2"), "sub/c": []byte("3")}, Ownership{})
	if err != nil || changed {
		t.Fatalf("same content: changed=%v err=%v, want no change", changed, err)
	}

	changed, err = Write(dir, map[string][]byte{"a": []byte("1"), "b": []byte("two")}, Ownership{})
	if err != nil || !changed {
		t.Fatalf("new content: changed=%v err=%v", changed, err)
	}
	if inode(t, filepath.Join(dir, "a")) != inoA {
		t.Error("unchanged file a was rewritten")
	}
	if inode(t, filepath.Join(dir, "b")) == inoB {
		t.Error("changed file b kept its inode")
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got["a"]) != "1" || string(got["b"]) != "two" {
		t.Fatalf("Read = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("removed file's directory still visible: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	var data int
	for _, e := range entries {
		if e.IsDir() {
			data++
		}
	}
	if data != 1 {
		t.Errorf("%d data directories left, want 1", data)
	}
}

func TestWriteModes(t *testing.T) {
	dir := t.TempDir()
	gid := int64(os.Getgid())
	if _, err := Write(dir, map[string][]byte{"f": []byte("x")}, Ownership{GID: &gid}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o440 {
		t.Errorf("mode %v, want 0440", fi.Mode().Perm())
	}
	if g := fi.Sys().(*syscall.Stat_t).Gid; int64(g) != gid {
		t.Errorf("gid %d, want %d", g, gid)
	}
}

// TestADataLinkOutOfTheDirectoryIsRefused: "..data" naming anything but a data directory of
// the package's own in dir (a path out of the volume) is refused, not read, linked from nor
// removed.
func TestADataLinkOutOfTheDirectoryIsRefused(t *testing.T) {
	outside := t.TempDir()
	kept := filepath.Join(outside, "kept")
	if err := os.WriteFile(kept, []byte("not the volume's"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{outside, "../" + filepath.Base(outside), "..tmp_x/../..", "data", "..tmp_link"} {
		dir := t.TempDir()
		if err := os.Symlink(outside, filepath.Join(dir, "..tmp_link")); err != nil { // named as a data directory
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(dir, dataLink)); err != nil {
			t.Fatal(err)
		}
		if _, err := Write(dir, map[string][]byte{"a": []byte("new")}, Ownership{}); err == nil || !strings.Contains(err.Error(), "not a data directory of its own") {
			t.Errorf("..data -> %q: Write %v, want it refused", target, err)
		}
		if _, err := Read(dir); err == nil {
			t.Errorf("..data -> %q: read", target)
		}
	}
	if b, err := os.ReadFile(kept); err != nil || string(b) != "not the volume's" {
		t.Errorf("the file outside: %q %v", b, err)
	}
}
