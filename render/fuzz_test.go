package render

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzValidateFileName feeds file names (from ConnectorClasses and `!<file>` exclusions) to the
// check: an accepted name always stays inside the volume and clear of the writer's ".." names.
func FuzzValidateFileName(f *testing.F) {
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateFileName(name) != nil {
			return
		}
		root := "/volume"
		joined := filepath.Join(root, name)
		if !strings.HasPrefix(joined, root+"/") {
			t.Fatalf("%q was accepted but lands at %s", name, joined)
		}
		for _, seg := range strings.Split(name, "/") {
			if strings.HasPrefix(seg, "..") {
				t.Fatalf("%q was accepted with a %q segment", name, seg)
			}
		}
	})
}
