// Package binpages gives back the pages of the program's own executable that it touched while
// starting. A Go binary with Kubernetes' client libraries runs thousands of package
// initializers (scheme registrations, type tables) once; the text and read-only data they
// touched stay resident, counted in the process's RSS, though nothing uses them again. Only
// read-only mappings of the executable that hold no private (copied-on-write) page are
// released, with madvise(MADV_DONTNEED): their pages stay in the page cache, and any that are
// used again come back with a minor fault. Written here because no library does this.
package binpages

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mapping is one line of /proc/self/smaps and what of it matters here.
type mapping struct {
	start, end uintptr
	perms      string
	path       string
	anonymous  int64 // kB of private anonymous (copied-on-write) pages
}

// Release drops the executable's clean read-only pages from the process and returns how many
// bytes of address space it released them from.
func Release() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	maps, err := readSmaps("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	var released int64
	for _, m := range releasable(maps, exe) {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("madvise %x-%x: %w", m.start, m.end, errno)
		}
		released += int64(m.end - m.start)
	}
	return released, nil
}

// releasable are the mappings of exe that are read-only and hold no private page: dropping
// them loses nothing the file does not have.
func releasable(maps []mapping, exe string) []mapping {
	var out []mapping
	for _, m := range maps {
		if m.path == exe && !strings.Contains(m.perms, "w") && m.anonymous == 0 {
			out = append(out, m)
		}
	}
	return out
}

// readSmaps parses the address range, permissions, path and Anonymous field of each mapping.
func readSmaps(file string) ([]mapping, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var maps []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && len(fields) >= 5 && !strings.HasSuffix(fields[0], ":") {
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				continue // a field line whose name has a dash
			}
			m := mapping{start: uintptr(start), end: uintptr(end), perms: fields[1]}
			if len(fields) >= 6 {
				m.path = fields[5]
			}
			maps = append(maps, m)
			continue
		}
		if fields[0] == "Anonymous:" && len(maps) > 0 && len(fields) >= 2 {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", file, sc.Text(), err)
			}
			maps[len(maps)-1].anonymous = kb
		}
	}
	return maps, sc.Err()
}
