package templates

import "testing"

func TestExecuteWithSprigAndURLParse(t *testing.T) {
	c := NewCache()
	out, err := c.Execute("t", `{{ (urlParse .a).host }} {{ "x" | b64enc }} {{ .b | trimSuffix "/" }}`,
		map[string]any{"a": "https://git.example.com:8443/org", "b": "path/"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "git.example.com:8443 eA== path"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseErrorIsReturned(t *testing.T) {
	if _, err := NewCache().Execute("t", `{{ .a `, nil); err == nil {
		t.Fatal("want a parse error")
	}
}

func TestExecuteErrorIsReturned(t *testing.T) {
	if _, err := NewCache().Execute("t", `{{ fail "boom" }}`, nil); err == nil {
		t.Fatal("want an execution error")
	}
}
