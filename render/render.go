// Package render turns Connectors, their ConnectorClasses' configuration templates, the Pod's
// token and the proxy's address into the files of a volume, in memory. It touches no disk and
// no API: the node package resolves its inputs and writes its output.
package render

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/contract"
	"github.com/kube-connectors/connectors-csi/templates"
)

// Source is one Connector of a volume together with its ConnectorClass.
type Source struct {
	Connector *v1alpha1.Connector
	Class     *v1alpha1.ConnectorClass
}

// Request is everything a volume's files are made from.
type Request struct {
	// Sources are the volume's Connectors in the order the Pod named them.
	Sources []Source
	// Configurations are the configuration names to render; empty renders only the built-in
	// files (as Alauda's driver).
	Configurations []string
	// Excluded are file names removed from the final output (built-in files too).
	Excluded []string
	// Params are configuration.params: values by configuration name, then param name.
	Params map[string]ParamValues
	// Token is the Pod's projected ServiceAccount token.
	Token string
	// CACert is the proxy CA in PEM.
	CACert string
	// PodNamespace is the namespace of the Pod the volume is for: a Connector of another
	// namespace never gets its own host there (see proxyURLForPod).
	PodNamespace string
}

// Files are a volume's files by relative path.
type Files map[string][]byte

// Renderer renders volumes; it is safe for concurrent use.
type Renderer struct {
	// ProxyURL is the base URL of the built-in proxy, e.g. http://connectors-proxy.ns.svc:3128.
	ProxyURL string
	// NoProxy is the no_proxy value written into .env.
	NoProxy string
	// ClusterDomain is the cluster's DNS domain, for Connectors' own hosts on the built-in
	// proxy (cluster.local when empty).
	ClusterDomain string
	templates     *templates.Cache
}

// NewRenderer returns a Renderer for the given built-in proxy URL. A file whose template
// writes more than maxFileBytes (0: unbounded) fails the render: it could not fit the volume
// anyway, and a class looping over a tenant's params or Connectors must not make the node hold
// more than that.
func NewRenderer(proxyURL, noProxy string, maxFileBytes int) *Renderer {
	var opts []templates.Option
	if maxFileBytes > 0 {
		opts = append(opts, templates.OutputLimit(maxFileBytes))
	}
	return &Renderer{ProxyURL: strings.TrimSuffix(proxyURL, "/"), NoProxy: noProxy, templates: templates.NewCache(opts...)}
}

// Render produces the files of a volume. Errors are *InputError for faults of the request and
// *ClassError for faults of a ConnectorClass.
func (r *Renderer) Render(req Request) (Files, error) {
	if len(req.Sources) == 0 {
		return nil, inputErrorf("no Connectors to render")
	}
	if err := r.checkRequested(req); err != nil {
		return nil, err
	}
	files := r.builtinFiles(req)
	forward := r.forwardProxyURL(req)
	for _, group := range groupByClass(req.Sources) {
		if err := r.renderClass(req, group, forward, files); err != nil {
			return nil, err
		}
	}
	for _, name := range req.Excluded {
		delete(files, name)
	}
	return files, nil
}

// checkRequested rejects configuration names and configuration.params keys that no class of the
// volume defines.
func (r *Renderer) checkRequested(req Request) error {
	known := map[string]bool{}
	for _, s := range req.Sources {
		for _, c := range s.Class.Spec.Configurations {
			known[c.Name] = true
		}
	}
	for _, name := range req.Configurations {
		if !known[name] {
			return inputErrorf("configuration.names: no ConnectorClass of this volume has a configuration %q (known: %s)",
				contract.Short(name), strings.Join(sortedKeys(known), ", "))
		}
	}
	for _, name := range sortedKeys(req.Params) {
		if !known[name] || !slices.Contains(req.Configurations, name) {
			return inputErrorf("configuration.params: configuration %q is not rendered in this volume", contract.Short(name))
		}
	}
	return nil
}

// classGroup is the Connectors of one class, in the order the Pod named them.
type classGroup struct {
	class      *v1alpha1.ConnectorClass
	connectors []*v1alpha1.Connector
}

func groupByClass(sources []Source) []*classGroup {
	var groups []*classGroup
	byName := map[string]*classGroup{}
	for _, s := range sources {
		g := byName[s.Class.Name]
		if g == nil {
			g = &classGroup{class: s.Class}
			byName[s.Class.Name] = g
			groups = append(groups, g)
		}
		g.connectors = append(g.connectors, s.Connector)
	}
	return groups
}

// renderClass renders the requested configurations of one class once over all its Connectors;
// a file of a later class replaces the same file of an earlier one.
func (r *Renderer) renderClass(req Request, g *classGroup, forwardURL string, files Files) error {
	connectors := make([]any, len(g.connectors))
	for i, c := range g.connectors {
		obj, err := r.connectorData(g.class, c, req.PodNamespace)
		if err != nil {
			return err
		}
		connectors[i] = obj
	}
	for _, conf := range g.class.Spec.Configurations {
		if !slices.Contains(req.Configurations, conf.Name) {
			continue
		}
		params, err := resolveParams(g.class.Name, &conf, req.Params[conf.Name])
		if err != nil {
			return err
		}
		data := map[string]any{
			"connector":      connectors[0],
			"connectors":     connectors,
			"connectorclass": map[string]any{"proxyAddress": r.classProxyURL(g.class)},
			"context": map[string]any{
				"token": req.Token,
				"proxy": map[string]any{"caCert": req.CACert, "httpProxy": forwardURL},
			},
			"configurations": params,
		}
		for _, file := range sortedKeys(conf.Data) {
			classErr := func(err error) error {
				return &ClassError{Class: g.class.Name, Configuration: conf.Name, File: file, Err: err}
			}
			if err := ValidateFileName(file); err != nil {
				return classErr(err)
			}
			out, err := r.templates.Execute(file, conf.Data[file], data)
			if err != nil {
				return classErr(withoutToken(err, req.Token))
			}
			files[file] = out
		}
	}
	return nil
}

// connectorData is the template view of a Connector: its JSON form (metadata, spec, status)
// with status.proxyAddress set to its reverse-proxy address for a Pod of podNamespace.
func (r *Renderer) connectorData(class *v1alpha1.ConnectorClass, c *v1alpha1.Connector, podNamespace string) (map[string]any, error) {
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode Connector %s/%s: %w", c.Namespace, c.Name, err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("decode Connector %s/%s: %w", c.Namespace, c.Name, err)
	}
	status, _ := obj["status"].(map[string]any)
	if status == nil {
		status = map[string]any{}
		obj["status"] = status
	}
	status["proxyAddress"] = r.proxyURLForPod(class, c, podNamespace)
	return obj, nil
}

// classProxyURL is the proxy serving a class.
func (r *Renderer) classProxyURL(class *v1alpha1.ConnectorClass) string {
	return ClassProxyURL(r.ProxyURL, class)
}

// ClassProxyURL is the proxy serving a class: its own (as the controller resolved spec.proxy
// into status.proxy.httpAddress.url) or the built-in one at builtIn.
func ClassProxyURL(builtIn string, class *v1alpha1.ConnectorClass) string {
	if own := class.OwnProxyURL(); own != "" {
		return own
	}
	return strings.TrimSuffix(builtIn, "/")
}

// ConnectorProxyURL is the reverse-proxy address of a Connector (SPEC §4.3), the value of its
// status.proxy.httpAddress.url: /namespaces/<ns>/connectors/<name> under the built-in proxy,
// or its own host there (c-<name>.<ns>.svc.<domain>, same scheme and port) when the class's
// resolver annotation says host and c-<name> can be a Service's name; under a class's own
// proxy, the path form when the class resolves by path, else the class's proxy address itself
// (Alauda's host resolver).
func ConnectorProxyURL(builtIn, clusterDomain string, class *v1alpha1.ConnectorClass, c *v1alpha1.Connector) string {
	if own := class.OwnProxyURL(); own != "" && !class.ProxyResolvesByPath() {
		return own
	}
	if class.BuiltInProxyResolvesByHost() {
		if own := ownHostURL(builtIn, clusterDomain, c); own != "" {
			return own
		}
	}
	return pathFormURL(builtIn, class, c)
}

// ownHostURL is the Connector's own host on the built-in proxy at builtIn, or "" when its
// name gives no Service name (the status controller reports InvalidServiceName).
func ownHostURL(builtIn, clusterDomain string, c *v1alpha1.Connector) string {
	u, err := url.Parse(builtIn)
	service, problems := v1alpha1.HostServiceName(c.Name)
	if err != nil || u.Host == "" || len(problems) > 0 {
		return ""
	}
	if clusterDomain == "" {
		clusterDomain = "cluster.local"
	}
	host := fmt.Sprintf("%s.%s.svc.%s", service, c.Namespace, clusterDomain)
	if port := u.Port(); port != "" {
		host = net.JoinHostPort(host, port)
	}
	return u.Scheme + "://" + host
}

func pathFormURL(builtIn string, class *v1alpha1.ConnectorClass, c *v1alpha1.Connector) string {
	return fmt.Sprintf("%s/namespaces/%s/connectors/%s", ClassProxyURL(builtIn, class), c.Namespace, c.Name)
}

// proxyURLForPod is c's reverse-proxy address in a volume of a Pod of podNamespace: its
// ConnectorProxyURL, but the path form where that is the Connector's own host and the Pod is of
// another namespace. That host is a Service of the Connector's namespace, which its members may
// lead anywhere (to a listener of their own): the files would hand them the Pod's token, which
// works for every Connector the Pod's ServiceAccount may use. The path form goes through the
// built-in proxy's Service, which is the platform's.
func (r *Renderer) proxyURLForPod(class *v1alpha1.ConnectorClass, c *v1alpha1.Connector, podNamespace string) string {
	if c.Namespace != podNamespace && class.BuiltInProxyResolvesByHost() {
		return pathFormURL(r.ProxyURL, class, c)
	}
	return ConnectorProxyURL(r.ProxyURL, r.ClusterDomain, class, c)
}

// builtinFiles are the files every volume gets unless excluded.
func (r *Renderer) builtinFiles(req Request) Files {
	first := req.Sources[0]
	forward := r.forwardProxyURL(req)
	env := fmt.Sprintf("export http_proxy=%[1]s\nexport https_proxy=%[1]s\nexport no_proxy=%[2]s\n"+
		"export HTTP_PROXY=%[1]s\nexport HTTPS_PROXY=%[1]s\nexport NO_PROXY=%[2]s\n", forward, r.NoProxy)
	return Files{
		".env":                          []byte(env),
		"http.proxy":                    []byte(forward),
		"https.proxy":                   []byte(forward),
		"context.token":                 []byte(req.Token),
		"context.proxy.caCert":          []byte(req.CACert),
		"ca.crt":                        []byte(req.CACert),
		"ca.cert":                       []byte(req.CACert),
		"connector.status.proxyAddress": []byte(r.proxyURLForPod(first.Class, first.Connector, req.PodNamespace)),
	}
}

// forwardProxyURL is the forward proxy's URL with "<ns>%2F<name>[,...]:<token>@" userinfo, the
// form the forward proxy authenticates (SPEC §4.2). The proxy is the last Connector's class's
// (its own, or the built-in one), as Alauda's driver picks it.
func (r *Renderer) forwardProxyURL(req Request) string {
	names := make([]string, len(req.Sources))
	for i, s := range req.Sources {
		names[i] = url.PathEscape(s.Connector.Namespace + "/" + s.Connector.Name)
	}
	base := ClassProxyURL(r.ProxyURL, req.Sources[len(req.Sources)-1].Class)
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return base
	}
	return fmt.Sprintf("%s://%s:%s@%s%s", u.Scheme, strings.Join(names, ","), req.Token, u.Host, u.Path)
}
