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
	mu      sync.Mutex
	parsed  map[string]*template.Template
	options []string // text/template options, e.g. missingkey=error
}

// Option changes how a Cache's templates parse and execute.
type Option func(*Cache)

// MissingKeyError makes a reference to a key a map lacks an execution error, instead of the
// text "<no value>".
func MissingKeyError() Option {
	return func(c *Cache) { c.options = append(c.options, "missingkey=error") }
}

// NewCache returns an empty template cache with the full function set.
func NewCache(opts ...Option) *Cache {
	c := &Cache{parsed: map[string]*template.Template{}}
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
	return execute(t, data)
}

func execute(t *template.Template, data any) ([]byte, error) {
	var out bytes.Buffer
	if err := t.Execute(&out, data); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// Parse parses text, or takes it from the cache.
func (c *Cache) Parse(name, text string) (*template.Template, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.parsed[text]; ok {
		return t, nil
	}
	t, err := template.New(name).Funcs(funcs).Option(c.options...).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if len(c.parsed) >= maxCached {
		clear(c.parsed)
	}
	c.parsed[text] = t
	return t, nil
}
