// Package mount mounts and unmounts the tmpfs that holds a volume's files. The Mounter
// interface keeps this side effect out of the CSI code, so that tests without root run the same
// paths through a directory-only implementation.
package mount

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	mountutils "k8s.io/mount-utils"
)

// Mounter mounts volume targets.
type Mounter interface {
	// MountTmpfs mounts a tmpfs of at most sizeBytes at target (which must exist).
	MountTmpfs(target string, sizeBytes int64) error
	// IsMountPoint reports whether target is a mount point; false for a missing target.
	IsMountPoint(target string) (bool, error)
	// Unmount unmounts target if it is mounted and removes the directory.
	Unmount(target string) error
}

// Tmpfs is the real Mounter. Mount points are checked through k8s.io/mount-utils; mounting and
// unmounting use the system calls directly, because mount-utils runs /bin/mount and
// /bin/umount for each call, a fork and exec that alone costs more than the whole publish
// budget (SPEC §10: p50 under 2 ms).
type Tmpfs struct{ m mountutils.Interface }

// NewTmpfs returns the real Mounter.
func NewTmpfs() *Tmpfs { return &Tmpfs{m: mountutils.New("")} }

// MountTmpfs mounts a tmpfs without set-uid, device files or executables.
func (t *Tmpfs) MountTmpfs(target string, sizeBytes int64) error {
	data := fmt.Sprintf("mode=0755,size=%d", sizeBytes)
	if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, data); err != nil {
		return &os.PathError{Op: "mount tmpfs", Path: target, Err: err}
	}
	return nil
}

// IsMountPoint reports whether target is a mount point.
func (t *Tmpfs) IsMountPoint(target string) (bool, error) {
	ok, err := t.m.IsMountPoint(target)
	if os.IsNotExist(err) {
		return false, nil
	}
	return ok, err
}

// Unmount unmounts target (every stacked mount of it) and removes the directory.
func (t *Tmpfs) Unmount(target string) error {
	for {
		mounted, err := t.IsMountPoint(target)
		if err != nil {
			return err
		}
		if !mounted {
			break
		}
		if err := unix.Unmount(target, 0); err != nil {
			return &os.PathError{Op: "unmount", Path: target, Err: err}
		}
	}
	// Only an unmounted directory is removed, so this never deletes a volume's content.
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Directories is a Mounter for tests that run without root: "mounting" records the target, and
// unmounting empties and removes it.
type Directories struct {
	mu      sync.Mutex
	mounted map[string]int
}

// NewDirectories returns an empty directory Mounter.
func NewDirectories() *Directories { return &Directories{mounted: map[string]int{}} }

// MountTmpfs records a mount of target.
func (d *Directories) MountTmpfs(target string, _ int64) error {
	if _, err := os.Stat(target); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mounted[target]++
	return nil
}

// IsMountPoint reports whether target was mounted and not unmounted since.
func (d *Directories) IsMountPoint(target string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mounted[target] > 0, nil
}

// Unmount forgets target and removes it with its content.
func (d *Directories) Unmount(target string) error {
	d.mu.Lock()
	delete(d.mounted, target)
	d.mu.Unlock()
	return os.RemoveAll(target)
}

// Mounts returns how many times target is mounted.
func (d *Directories) Mounts(target string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mounted[target]
}
