// Package templates parses and executes the Go text/templates of ConnectorClass configurations
// with the sprig function set plus the functions this project adds.
package templates

import (
	"bytes"
	"fmt"
	"net/url"
	"sync"
	"text/template"

	"github.com/Masterminds/sprig/v3"
)

// funcs is sprig's text function set plus urlParse. Built once: sprig builds a fresh map on
// every call, which would cost an allocation-heavy copy on each parse.
var funcs = func() template.FuncMap {
	f := sprig.TxtFuncMap()
	f["urlParse"] = urlParse
	return f
}()

// urlParse exposes a URL's parts to templates as a map, e.g. {{ (urlParse .spec.address).host }}.
func urlParse(raw string) (map[string]any, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"scheme":   u.Scheme,
		"host":     u.Host,
		"hostname": u.Hostname(),
		"port":     u.Port(),
		"path":     u.Path,
		"query":    u.RawQuery,
		"fragment": u.Fragment,
		"opaque":   u.Opaque,
		"userinfo": u.User.String(),
	}, nil
}

// maxCached bounds the parsed-template cache; classes are few, so this is only a safety net.
const maxCached = 1024

// Cache keeps parsed templates by their text, so that a publish from warm caches does not parse.
type Cache struct {
	mu        sync.Mutex
	parsed    map[parsedKey]*template.Template
	options   []string // text/template options, e.g. missingkey=error
	funcs     template.FuncMap
	maxOutput int // 0: unbounded
}

// Option changes how a Cache's templates parse and execute.
type Option func(*Cache)

// MissingKeyError makes a reference to a key a map lacks an execution error, instead of the
// text "<no value>".
func MissingKeyError() Option {
	return func(c *Cache) { c.options = append(c.options, "missingkey=error") }
}

// OutputLimit fails an execution whose output passes n bytes (n > 0).
func OutputLimit(n int) Option {
	return func(c *Cache) { c.maxOutput = n }
}

// NewCache returns an empty template cache with the full function set.
func NewCache(opts ...Option) *Cache {
	c := &Cache{parsed: map[parsedKey]*template.Template{}, funcs: funcs}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Execute parses text (or takes it from the cache) and executes it over data.
func (c *Cache) Execute(name, text string, data any) ([]byte, error) {
	t, err := c.Parse(name, text)
	if err != nil {
		return nil, err
	}
	return c.execute(t, data)
}

// ExecuteUntrusted is Execute for a template written by a tenant: it may not use range,
// define, template or block, so that what it costs is bounded by its length (each of its
// actions runs once, each function bounded by a restricted Cache).
func (c *Cache) ExecuteUntrusted(name, text string, data any) ([]byte, error) {
	t, err := c.ParseUntrusted(name, text)
	if err != nil {
		return nil, err
	}
	return c.execute(t, data)
}

// MaxUntrustedText bounds a template written by a tenant (a label value of an inline check):
// its parse tree can be tens of times its text, and the cache keeps up to maxCached of them.
const MaxUntrustedText = 1024

// ParseUntrusted is Parse for a template written by a tenant (see ExecuteUntrusted): at most
// MaxUntrustedText bytes, and cached only once it passed the straight-line check, so that
// refused templates never take the cache's memory.
func (c *Cache) ParseUntrusted(name, text string) (*template.Template, error) {
	key := parsedKey{text: text, untrusted: true}
	if t, ok := c.cached(key); ok {
		return t, nil
	}
	if len(text) > MaxUntrustedText {
		return nil, fmt.Errorf("the template is %d bytes, more than %d", len(text), MaxUntrustedText)
	}
	t, err := c.parse(name, text)
	if err != nil {
		return nil, err
	}
	if err := checkStraightLine(t); err != nil {
		return nil, err
	}
	c.keep(key, t)
	return t, nil
}

func (c *Cache) execute(t *template.Template, data any) ([]byte, error) {
	if c.maxOutput == 0 {
		var out bytes.Buffer
		if err := t.Execute(&out, data); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	}
	out := &limitedWriter{left: c.maxOutput}
	if err := t.Execute(out, data); err != nil {
		return nil, err
	}
	return out.buf.Bytes(), nil
}

// limitedWriter fails a write past its limit, which stops the template's execution; the
// standard library only limits readers.
type limitedWriter struct {
	buf  bytes.Buffer
	left int
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		return 0, fmt.Errorf("the output is larger than %d bytes", w.buf.Len()+w.left)
	}
	w.left -= len(p)
	return w.buf.Write(p)
}

// Parse parses text, or takes it from the cache.
func (c *Cache) Parse(name, text string) (*template.Template, error) {
	key := parsedKey{text: text}
	if t, ok := c.cached(key); ok {
		return t, nil
	}
	t, err := c.parse(name, text)
	if err != nil {
		return nil, err
	}
	c.keep(key, t)
	return t, nil
}

// parsedKey keys a parsed template by its text and whether it passed ParseUntrusted's checks:
// a tenant writing an administrator's template text must not get it without them.
type parsedKey struct {
	text      string
	untrusted bool
}

func (c *Cache) parse(name, text string) (*template.Template, error) {
	t, err := template.New(name).Funcs(c.funcs).Option(c.options...).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return t, nil
}

func (c *Cache) cached(key parsedKey) (*template.Template, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.parsed[key]
	return t, ok
}

func (c *Cache) keep(key parsedKey, t *template.Template) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.parsed) >= maxCached {
		clear(c.parsed)
	}
	c.parsed[key] = t
}
