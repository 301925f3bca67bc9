package e2e

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// normalizeDescribe makes kubectl describe output stable: names, UIDs, times and ages become
// placeholders, and events (which can share a timestamp) are sorted.
func normalizeDescribe(out string, names map[string]string) string {
	// Longest first: one name may contain another (the request's name holds the Pod's).
	reals := make([]string, 0, len(names))
	for real := range names {
		reals = append(reals, real)
	}
	sort.Slice(reals, func(i, j int) bool { return len(reals[i]) > len(reals[j]) })
	for _, real := range reals {
		out = strings.ReplaceAll(out, real, names[real])
	}
	for _, r := range []struct{ re, repl string }{
		{`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z`, "<time>"},
		{`\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}`, "<time>"},
		{`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`, "<uid>"},
		{`Resource Version:\s+\d+`, "Resource Version:  <rv>"},
		{`(?m)^(\s+(Normal|Warning)\s+\S+\s+)\S+(\s+)`, "${1}<age>${3}"},
		{`\(x\d+ over \S+\)`, ""},
		{`[ \t]+\n`, "\n"},
	} {
		out = regexp.MustCompile(r.re).ReplaceAllString(out, r.repl)
	}
	head, events, found := strings.Cut(out, "Events:\n")
	if !found {
		return out
	}
	lines := strings.Split(strings.TrimRight(events, "\n"), "\n")
	spaces := regexp.MustCompile(`\s+`)
	for i := range lines {
		lines[i] = spaces.ReplaceAllString(strings.TrimSpace(lines[i]), " ")
	}
	if len(lines) > 2 {
		body := lines[2:]
		sort.Strings(body)
		lines = append(lines[:2], body...)
	}
	return head + "Events:\n" + strings.Join(lines, "\n") + "\n"
}

// checkGolden compares got with testdata/<name>, or rewrites it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./test/e2e -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}
