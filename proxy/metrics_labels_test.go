package proxy

import "testing"

// TestCodeLabelsAreFew: a tool that answers with every code from 0 to 999 makes at most a
// label per code net/http knows, plus one per class and "other".
func TestCodeLabelsAreFew(t *testing.T) {
	labels := map[string]bool{}
	for code := range 1000 {
		labels[codeLabel(code)] = true
	}
	if len(labels) > 70 {
		t.Errorf("%d code labels", len(labels))
	}
	for code, want := range map[int]string{200: "200", 404: "404", 418: "418", 299: "2xx", 599: "5xx", 999: "other", 42: "other"} {
		if got := codeLabel(code); got != want {
			t.Errorf("codeLabel(%d) = %q, want %q", code, got, want)
		}
	}
}
