package binpages

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFile is the process's file-backed resident memory in kB (/proc/self/status RssFile).
func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestReleaseDropsTheExecutablesPages: the test binary's own read-only pages leave its RSS,
// and the process goes on running the code they held (it faults back what it uses).
func TestReleaseDropsTheExecutablesPages(t *testing.T) {
	before := rssFile(t)
	released, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	if released == 0 || after >= before {
		t.Fatalf("released %d bytes of mappings; file-backed RSS %d kB → %d kB, want it lower", released, before, after)
	}
	// Code from the released pages still runs.
	if got := strconv.Itoa(42) + strings.Repeat("!", 2); got != "42!!" {
		t.Fatalf("got %q", got)
	}
}

// TestReleasableKeepsWritableAndCopiedPages: only read-only mappings of the executable with no
// private page are released; its writable data, a copied-on-write page, other files and
// anonymous memory are left alone.
func TestReleasableKeepsWritableAndCopiedPages(t *testing.T) {
	exe := "/usr/bin/connectors-csi"
	maps := []mapping{
		{start: 0x1000, end: 0x2000, perms: "r-xp", path: exe},
		{start: 0x2000, end: 0x3000, perms: "r--p", path: exe},
		{start: 0x3000, end: 0x4000, perms: "r--p", path: exe, anonymous: 4}, // relocated (RELRO)
		{start: 0x4000, end: 0x5000, perms: "rw-p", path: exe},
		{start: 0x5000, end: 0x6000, perms: "r-xp", path: "/usr/lib/libc.so.6"},
		{start: 0x6000, end: 0x7000, perms: "rw-p"},
	}
	got := releasable(maps, exe)
	if len(got) != 2 || got[0].start != 0x1000 || got[1].start != 0x2000 {
		t.Fatalf("releasable = %+v, want the text and the clean read-only data only", got)
	}
}

// TestReadSmapsReadsThisProcess: the parser finds the executable's mappings with their
// permissions in this process's own smaps.
func TestReadSmapsReadsThisProcess(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := readSmaps("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var text bool
	for _, m := range maps {
		if m.end <= m.start {
			t.Errorf("mapping %x-%x is empty", m.start, m.end)
		}
		text = text || m.path == exe && strings.HasPrefix(m.perms, "r-x")
	}
	if !text {
		t.Fatalf("no executable mapping of %s among %d mappings", exe, len(maps))
	}
}
