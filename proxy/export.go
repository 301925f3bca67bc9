package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/secretcache"
)

// This file is what the Connectors API reuses of the proxy: the same credential and transport
// resolution, and the same streaming forwarder.

// Upstream is how to reach a Connector's tool: its credential and a transport trusting its CA.
type Upstream struct {
	// Username and Password for basic-auth and registry-token Secrets; Token for bearer ones.
	Username, Password, Token string
	// SecretType is the credential Secret's type as the class reads it (AuthSecretType) and
	// SecretData its data, for class API services (X-Plugin-Auth, X-Plugin-Secret); both are
	// empty for a Connector without a Secret.
	SecretType string
	SecretData map[string][]byte
	// CABundle is the Connector's caCertSecretRef PEM, when set.
	CABundle []byte
	// Transport reaches the tool: through the destination policy, trusting the Connector's CA,
	// with the hop marker, on connections of the Connector's and the caller's own. It refuses every URL outside the Connector's addresses, so that a
	// library holding the credential (a registry client answering a token challenge, a
	// redirect) cannot send it anywhere else.
	Transport http.RoundTripper
}

// Upstream resolves a Connector's credential and transport for caller's requests. Errors name
// the Connector and the Secret, never a value.
func (p *Proxy) Upstream(ctx context.Context, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, caller user.Info) (*Upstream, error) {
	ctx = p.forAPI(ctx)
	cred, err := p.credentialFor(ctx, c, class) // also validates the Secret's type and keys
	if err != nil {
		return nil, err
	}
	tr, ca, err := p.transportFor(ctx, c)
	if err != nil {
		return nil, err
	}
	owned := ownedPool{p: p, tr: tr, owner: poolOwner{connector: c.UID, caller: CallerOf(caller)}}
	u := &Upstream{CABundle: ca, Transport: egress.Marked(onlyAddresses{addresses: parsedAddresses(c), denied: p.deniedCheckFor(c, class), next: owned})}
	if sec := cred.secret; sec != nil {
		u.Username = string(sec.Data[corev1.BasicAuthUsernameKey])
		u.Password = string(sec.Data[corev1.BasicAuthPasswordKey])
		u.Token = string(sec.Data["token"])
		u.SecretType, u.SecretData = AuthSecretType(c, class, sec), sec.Data
	}
	return u, nil
}

// OwnPool is tr with connections of c's and caller's own (the caller's namespace for a
// ServiceAccount, else the user), as the proxy pools its own (ownerTransports; the API's are
// kept apart from the proxy's, --api-transport-cache-size): no connection
// carries one tenant's request and then, with another Connector's credential, another's.
func (p *Proxy) OwnPool(tr *http.Transport, c *v1alpha1.Connector, caller user.Info) *http.Transport {
	return p.apiOwned.For(tr, poolOwner{connector: c.UID, caller: CallerOf(caller)})
}

// ownedPool sends through tr's clone of owner's own, taken from the owner transports when a
// request is sent: an Upstream whose transport goes unused (a class API service's call needs
// only the credential) takes no place among them.
type ownedPool struct {
	p     *Proxy
	tr    *http.Transport
	owner poolOwner
}

func (o ownedPool) RoundTrip(r *http.Request) (*http.Response, error) {
	return o.p.apiOwned.For(o.tr, o.owner).RoundTrip(egress.DialsEndWith(r))
}

// onlyAddresses refuses requests to URLs no address of the Connector covers, and to the paths
// the proxy denies (the node's and the class's denied paths: a built-in list's URL is partly
// the caller's, as a proxied request's is).
type onlyAddresses struct {
	addresses []*url.URL
	denied    deniedCheck
	next      http.RoundTripper
}

func (o onlyAddresses) RoundTrip(r *http.Request) (*http.Response, error) {
	err := error(&egress.RefusedError{Host: r.URL.Host, Why: "not an address of the Connector (add it as an address extension)"})
	for _, a := range o.addresses {
		if covers(a, r.URL) {
			denied := o.denied.check(r.URL.EscapedPath())
			if denied == nil {
				return o.next.RoundTrip(r)
			}
			err = &egress.RefusedError{Host: r.URL.Host, Why: denied.Error()}
			break
		}
	}
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return nil, err
}

// Forward streams r of caller to target through c with c's credential injected, like the
// reverse proxy. It returns an error, without writing, when the credential cannot be resolved.
func (p *Proxy) Forward(w http.ResponseWriter, r *http.Request, caller user.Info, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, target *url.URL) error {
	rt, err := p.newRoute(p.forAPI(r.Context()), c, class, target)
	if err != nil {
		return err
	}
	rt.statusErrors, rt.caller = true, CallerOf(caller)
	p.send(w, r, rt)
	return nil
}

// forAPI is ctx for the Connectors API's reads of Secrets (Config.APISecretReads).
func (p *Proxy) forAPI(ctx context.Context) context.Context {
	if p.cfg.APISecretReads == nil {
		return ctx
	}
	return secretcache.WithReads(ctx, p.cfg.APISecretReads)
}

// Connector reads a Connector and its class from the informer caches; a missing one is an error
// with status 404 (see Status).
func (p *Proxy) Connector(ctx context.Context, namespace, name string) (*v1alpha1.Connector, *v1alpha1.ConnectorClass, error) {
	objects := p.cfg.APIObjects
	if objects == nil {
		objects = p.objects
	}
	return p.connectorFrom(ctx, objects, nsName(namespace, name))
}

// Status returns the HTTP status and message of a proxy refusal, or 0 for another error.
func Status(err error) (int, string) {
	if rf, ok := err.(*refusal); ok {
		return rf.status, rf.msg
	}
	return 0, ""
}

// WriteStatus writes a Kubernetes Status error, the error format of the Connectors API.
func WriteStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(&metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg,
	})
}

// Covers reports whether target falls under a Connector address: same scheme and host (default
// ports made explicit), and a path inside the address's path that no tool can resolve
// elsewhere (see CheckPath).
func Covers(address, target *url.URL) bool { return covers(address, target) }
