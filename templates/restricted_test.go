package templates

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestRestrictedRefusesDeniedFunctions(t *testing.T) {
	c := NewCache(Restricted())
	for _, fn := range []string{"env", "expandenv", "getHostByName", "genPrivateKey", "derivePassword", "bcrypt", "htpasswd", "randAlpha", "randInt", "uuidv4", "shuffle"} {
		if _, err := c.Execute("t", "{{ "+fn+" }}", nil); err == nil || !strings.Contains(err.Error(), `function "`+fn+`" not defined`) {
			t.Errorf("%s: %v", fn, err)
		}
	}
	if _, err := NewCache().Execute("t", `{{ env "HOME" }}`, nil); err != nil {
		t.Errorf("the full set lost env: %v", err)
	}
}

func TestRestrictedKeepsOrdinaryFunctions(t *testing.T) {
	c := NewCache(Restricted())
	for text, want := range map[string]string{
		`{{ repeat 3 "ab" }}`:                                  "ababab",
		`{{ "a\nb" | indent 2 }}`:                              "  a\n  b",
		`{{ until 3 | join "," }}`:                             "0,1,2",
		`{{ seq 1 3 }}`:                                        "1 2 3",
		`{{ untilStep 0 10 5 | join "," }}`:                    "0,5",
		`{{ replace "a" "bb" "aXa" }}`:                         "bbXbb",
		`{{ regexReplaceAll "a(x*)b" "-ab-axxb-" "${1}W" }}`:   "-W-xxW-",
		`{{ printf "%05d|%.2f" 42 3.14159 }}`:                  "00042|3.14",
		`{{ print "a" 1 }}`:                                    "a1",
		`{{ wrapWith 2 "|" "abcd" }}`:                          "ab|cd",
		`{{ (urlParse "https://h:1/p").host }}`:                "h:1",
		`{{ dict "a" 1 | toJson }}`:                            `{"a":1}`,
		`{{ regexMatch "^run-[0-9]+$" "run-12" }}`:             "true",
		`{{ regexFind "[0-9]+" "run-12" }}`:                    "12",
		`{{ regexFindAll "[0-9]" "a1b2" -1 | join "," }}`:      "1,2",
		`{{ regexSplit "-" "a-b" -1 | join "," }}`:             "a,b",
		`{{ list 1 2 1 | uniq | join "," }}`:                   "1,2",
		`{{ list (list 1) (list 1.0) (list 1) | uniq | len }}`: "2",
		`{{ regexMatch "(" "x" }}`:                             "false",
		`{{ regexFindAll "[0-9]" (repeat 500 "1") -1 | len }}`: "500",
		`{{ without (list 1 2 3) 2 | join "," }}`:              "1,3",
		// Linear, not item by item: sprig's took seconds.
		`{{ concat (until 8000) (untilStep 8000 16000 1) | uniq | len }}`:        "16000",
		`{{ without (concat (until 8000) (untilStep 8000 16000 1)) 1 2 | len }}`: "15998",
	} {
		out, err := c.Execute("t", text, nil)
		if err != nil || string(out) != want {
			t.Errorf("%s: %q %v, want %q", text, out, err, want)
		}
	}
}

func TestRestrictedBoundsWhatCouldExplode(t *testing.T) {
	c := NewCache(Restricted())
	for text, want := range map[string]string{
		`{{ repeat 30000000 "x" | trunc 10 }}`:                                    "repeat would make",
		`{{ indent 100000000 "x" }}`:                                              "indent would make",
		`{{ nindent 100000000 "x" }}`:                                             "nindent would make",
		`{{ until 100000000 | len }}`:                                             "until would make",
		`{{ untilStep 0 100000000 1 | len }}`:                                     "untilStep would make",
		`{{ seq 100000000 }}`:                                                     "seq would make",
		`{{ seq 0 1 100000000 }}`:                                                 "seq would make",
		`{{ $a := repeat 1000 "x" }}{{ replace "" $a $a }}`:                       "replace would make",
		`{{ $a := repeat 1000 "x" }}{{ wrapWith 1 $a $a }}`:                       "wrapWith would make",
		`{{ $a := repeat 300 "x" }}{{ regexReplaceAll "" $a (repeat 1000 "y") }}`: "regexReplaceAll would make",
		`{{ printf "%0999999999d" 1 }}`:                                           "width or precision",
		`{{ printf "%*d" 999999999 1 }}`:                                          "(*)",
		`{{ printf "%.[1]*d" 999999999 1 }}`:                                      "(*)",
		`{{ $a := repeat 200000 "x" }}{{ $a = cat $a $a }}{{ len $a }}`:           "more than 262144 bytes",
		`{{ $l := list (repeat 200000 "x") }}{{ $l = concat $l $l }}`:             "more than 262144 bytes",
		`{{ $d := dict }}{{ $_ := set $d "a" $d }}{{ $d }}`:                       "more than 262144 bytes",
		`{{ repeat 60000 "x" }}{{ repeat 60000 "x" }}`:                            "output is larger than 65536 bytes",
		// text/template's escapers, chained, double and more at each step.
		`{{ repeat 200000 "\\" | js | js | js | js | js | js | js | js | js | js | len }}`: "js made a value",
		`{{ repeat 200000 "<" | html | html | len }}`:                                      "html made a value",
		`{{ repeat 200000 "/" | urlquery | urlquery | len }}`:                              "urlquery made a value",
		// Small values, long work: a regular expression's instructions × its text, and lists
		// compared item by item.
		`{{ regexMatch (repeat 1000 "a*") (repeat 2000 "a") }}`:         "regexMatch would take about",
		`{{ mustRegexMatch (repeat 1000 "a*") (repeat 2000 "a") }}`:     "mustRegexMatch would take about",
		`{{ regexFind (repeat 1000 "a*") (repeat 2000 "a") }}`:          "regexFind would take about",
		`{{ regexFindAll (repeat 1000 "a*") (repeat 2000 "a") -1 }}`:    "regexFindAll would take about",
		`{{ regexSplit (repeat 1000 "a*") (repeat 2000 "a") -1 }}`:      "regexSplit would take about",
		`{{ regexReplaceAll (repeat 1000 "a*") (repeat 2000 "a") "" }}`: "regexReplaceAll would take about",
		`{{ regexMatch (repeat 3000 "a*") "a" }}`:                       "the pattern is 6000 bytes",
		`{{ regexMatch (repeat 580 "a{1000}") "" }}`:                    "the pattern compiles to about",
		// Those finding every match scan again after each: a*b|a makes that quadratic.
		`{{ regexFindAll "a*b|a" (repeat 30000 "a") -1 }}`:           "regexFindAll would take about",
		`{{ regexSplit "a*b|a" (repeat 30000 "a") -1 }}`:             "regexSplit would take about",
		`{{ regexReplaceAllLiteral "a*b|a" (repeat 30000 "a") "" }}`: "regexReplaceAllLiteral would take about",
	} {
		out, err := c.Execute("t", text, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %d bytes, %v; want an error with %q", text, len(out), err, want)
		}
	}
}

// TestRestrictedChecksEveryBuiltin: text/template's own functions are not in sprig's map, so
// nothing checks them unless the restricted set replaces them. Each either is replaced, or
// makes nothing larger than its arguments. The builtins are read from text/template's source:
// one a later Go adds fails here until it is placed.
func TestRestrictedChecksEveryBuiltin(t *testing.T) {
	noLarger := []string{"and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge", "len", "index", "slice", "call"}
	replaced := []string{"print", "printf", "println", "js", "html", "urlquery"}
	builtins := builtinNames(t)
	if len(builtins) == 0 {
		t.Fatal("no builtins found in text/template's source")
	}
	for _, name := range builtins {
		switch {
		case slices.Contains(replaced, name):
			if restrictedFuncs[name] == nil {
				t.Errorf("the builtin %s is not replaced by a checked function", name)
			}
		case !slices.Contains(noLarger, name):
			t.Errorf("the builtin %s is neither replaced nor known to make nothing larger than its arguments", name)
		}
	}
	for _, name := range []string{"html", "js", "urlquery"} {
		out, err := NewCache(Restricted()).Execute("t", `{{ "<a&b>" | `+name+` }}`, nil)
		want := map[string]string{"html": "&lt;a&amp;b&gt;", "js": `\u003Ca\u0026b\u003E`, "urlquery": "%3Ca%26b%3E"}[name]
		if err != nil || string(out) != want {
			t.Errorf("%s: %q %v, want %q as the builtin writes it", name, out, err, want)
		}
	}
}

// builtinNames are the keys of the map text/template's builtins function returns, read from
// the toolchain's source.
func builtinNames(t *testing.T) []string {
	t.Helper()
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(strings.TrimSpace(string(goroot)), "src", "text", "template", "funcs.go")
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, decl := range file.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "builtins" {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			if kv, ok := n.(*ast.KeyValueExpr); ok {
				if lit, ok := kv.Key.(*ast.BasicLit); ok {
					name, _ := strconv.Unquote(lit.Value)
					names = append(names, name)
				}
			}
			return true
		})
	}
	return names
}

func TestUntrustedTemplatesRunStraight(t *testing.T) {
	c := NewCache(Restricted())
	for text, want := range map[string]string{
		`{{ range until 3 }}x{{ end }}`:                      "range is not allowed",
		`{{ define "a" }}x{{ end }}{{ template "a" }}`:       "define and block are not allowed",
		`{{ block "a" . }}x{{ end }}`:                        "define and block are not allowed",
		`{{ if true }}{{ range until 2 }}{{ end }}{{ end }}`: "range is not allowed",
	} {
		if _, err := c.ExecuteUntrusted("t", text, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", text, err, want)
		}
	}
	for _, text := range []string{"", "plain", `{{ if .a }}{{ .a | upper }}{{ else }}none{{ end }}`, `{{ with .a }}{{ . }}{{ end }}`} {
		if _, err := c.ExecuteUntrusted("t", text, map[string]any{"a": "x"}); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
	if _, err := c.Execute("t", `{{ range until 3 }}x{{ end }}`, nil); err != nil {
		t.Errorf("a trusted template may range: %v", err)
	}
	// One cache serves both: a tenant writing the text an administrator's template was parsed
	// from gets the checks all the same.
	if _, err := c.ExecuteUntrusted("t", `{{ range until 3 }}x{{ end }}`, nil); err == nil || !strings.Contains(err.Error(), "range is not allowed") {
		t.Errorf("the text of a trusted template parsed before: %v, want range refused", err)
	}
	long := "{{ .a }}" + strings.Repeat(" ", MaxUntrustedText)
	if _, err := c.Execute("t", long, map[string]any{"a": "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecuteUntrusted("t", long, map[string]any{"a": "x"}); err == nil || !strings.Contains(err.Error(), "more than 1024") {
		t.Errorf("the long text of a trusted template parsed before: %v, want it refused", err)
	}
}

// TestUntrustedTemplatesAreBoundedAndRefusalsNotKept: a tenant's template is at most
// MaxUntrustedText bytes, and one refused is not kept in the cache (its parse tree would stay).
func TestUntrustedTemplatesAreBoundedAndRefusalsNotKept(t *testing.T) {
	c := NewCache(Restricted())
	long := strings.Repeat("{{ .a }}", MaxUntrustedText/8+1)
	if _, err := c.ExecuteUntrusted("t", long, map[string]any{"a": "x"}); err == nil || !strings.Contains(err.Error(), "more than 1024") {
		t.Errorf("a %d-byte template: %v", len(long), err)
	}
	if _, err := c.ExecuteUntrusted("t", `{{ range until 3 }}x{{ end }}`, nil); err == nil {
		t.Fatal("range passed")
	}
	if len(c.parsed) != 0 {
		t.Errorf("refused templates were kept: %d", len(c.parsed))
	}
	if _, err := c.ExecuteUntrusted("t", `{{ .a }}`, map[string]any{"a": "x"}); err != nil || len(c.parsed) != 1 {
		t.Errorf("an accepted template: %v, %d kept", err, len(c.parsed))
	}
}
