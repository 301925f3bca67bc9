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

func TestMissingKeyError(t *testing.T) {
	if out, err := NewCache().Execute("t", `{{ .a.b }}`, map[string]any{}); err != nil || string(out) != "<no value>" {
		t.Fatalf("default: %q %v", out, err)
	}
	if _, err := NewCache(MissingKeyError()).Execute("t", `{{ .a.b }}`, map[string]any{}); err == nil {
		t.Fatal("missingkey=error rendered a missing key")
	}
}

func TestUsesField(t *testing.T) {
	c := NewCache()
	for text, want := range map[string]bool{
		`{{ .run.metadata.name }}`:                       true,
		`{{ $.run.metadata.name }}`:                      true,
		`{{ if true }}{{ else }}{{ (.run).x }}{{ end }}`: true,
		`{{ with .x }}{{ .run }}{{ end }}`:               true, // conservative
		`{{ define "a" }}{{ .run }}{{ end }}`:            true,
		`{{ .object.run }}`:                              false,
		`{{ index . "runs" }}`:                           false,
	} {
		tmpl, err := c.Parse("t", text)
		if err != nil {
			t.Fatal(err)
		}
		if got := UsesField(tmpl, "run"); got != want {
			t.Errorf("UsesField(%s) = %v", text, got)
		}
	}
}
