package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// Extras of a Pod-bound ServiceAccount token, as TokenReview returns them: the Pod's name, and
// the node it was scheduled to (Kubernetes 1.30 and later, ServiceAccountTokenPodNodeInfo, when
// the Node existed as the token was issued).
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// The tokens the proxy takes (--proxy-tokens).
const (
	// TokensOfNode: only tokens of Pods on the proxy's own node (Config.Node).
	TokensOfNode = "node"
	// TokensOfAny: any token of the proxy's audience, whichever Pod or node it is bound to.
	TokensOfAny = "any"
)

// authenticate turns a token into a user, and tells w's meter whose it is; unauthorized is
// the status for "who are you" (401 for the reverse proxy, 407 for the forward proxy).
func (p *Proxy) authenticate(ctx context.Context, w http.ResponseWriter, token string, unauthorized int) (user.Info, error) {
	if token == "" {
		return nil, refusef(unauthorized, "no token: send the Pod's projected token (context.token) as the password or a Bearer token")
	}
	u, ok, err := p.reviewer.AuthenticateToken(ctx, token)
	var otherNode *access.OtherNodeError
	switch {
	case errors.As(err, &otherNode): // refused from its claims, before any review
		return nil, p.notOfThisNode(otherNode)
	case err != nil:
		return nil, unavailable(ctx, "review the token", err)
	}
	if !ok {
		return nil, refusef(unauthorized, "token not accepted: invalid, expired, for another audience, or its Pod is gone")
	}
	if err := p.ofThisNode(u); err != nil {
		return nil, err
	}
	identified(w, u)
	return u, nil
}

// ofThisNode refuses, when the proxy takes only its node's Pods' tokens (Config.Node), a token
// whose review does not bind it to a Pod of that node. Pods reach the proxy of their own node
// (the connectors-proxy Service routes node-locally), so a token of another node's Pod, or of
// no Pod, at this proxy is someone reaching past that: refused before any review of a
// permission or lookup of a Connector, it cannot make every node of a cluster watch a
// tenant's Connectors, read their Secrets, or spend their review limits, which their own Pods'
// requests wait on. The reviewer refuses most such tokens from their claims already, before
// reviewing them (access.Config.Node); this decides on what the review says. The refusal is
// not recorded on the Pod: it does not run here.
func (p *Proxy) ofThisNode(u user.Info) error {
	if p.cfg.Node == "" {
		return nil
	}
	_, isPod := podOfUser(u)
	nodes := u.GetExtra()[extraNodeName]
	switch {
	case !isPod:
		return p.notOfThisNode(&access.OtherNodeError{})
	case len(nodes) != 1 || nodes[0] == "":
		return p.notOfThisNode(&access.OtherNodeError{Pod: true})
	case nodes[0] != p.cfg.Node:
		return p.notOfThisNode(&access.OtherNodeError{Pod: true, Node: nodes[0]})
	}
	return nil
}

// notOfThisNode is the refusal of a token e says is not of this node's Pods. It does not name
// this node: the token's holder learns nothing of which node answers at an address.
func (p *Proxy) notOfThisNode(e *access.OtherNodeError) error {
	switch {
	case !e.Pod:
		return refusef(http.StatusForbidden, "this proxy takes only the tokens of its node's Pods, and this token is bound to no Pod: send a Pod's token (its connectors volume's, or one it projects for the proxy's audience)")
	case e.Node == "":
		return refusef(http.StatusForbidden, "this proxy takes only the tokens of its node's Pods, and this token names no node (Kubernetes 1.30 and later name the Pod's node in its tokens; --proxy-tokens=any takes tokens without one)")
	}
	return refusef(http.StatusForbidden, "the token's Pod runs on node %s, not this proxy's: send the request to the proxy of the Pod's node (the connectors-proxy Service)", e.Node)
}

// unavailable is the refusal of a request the API server could not be asked about now: 503,
// for the client to try again. What went wrong goes to the log, not to the client, which may
// not even be authenticated yet: the error names the API server's address.
func unavailable(ctx context.Context, what string, err error) error {
	klog.FromContext(ctx).Error(err, "Could not ask the API server", "asking", what)
	return refusef(http.StatusServiceUnavailable, "cannot %s now (the node's log says why); try again", what)
}

// methodVerbs maps HTTP methods to the RBAC verbs checked on connectors/proxy and
// connectors/apis (SPEC §5.2).
var methodVerbs = map[string]string{
	http.MethodGet: "get", http.MethodHead: "get", http.MethodOptions: "get",
	http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete",
}

// VerbFor returns the verb a request method needs. A method not in the table (WebDAV's
// PROPFIND, MKCOL, LOCK, or a made-up one) needs "create": only GET, HEAD and OPTIONS pass with
// a read grant. ok is false for TRACE and TRACK, which are never proxied: the tool would echo
// the injected credential back to the client.
func VerbFor(method string) (verb string, ok bool) {
	if v, found := methodVerbs[method]; found {
		return v, true
	}
	switch strings.ToUpper(method) {
	case "TRACE", "TRACK", http.MethodConnect:
		return "", false
	}
	return "create", true
}

// authorizeGet checks that u may get the Connector. It runs before the Connector is looked up,
// so that a stranger cannot tell a Connector that exists from one that does not (SPEC §4.7).
func (p *Proxy) authorizeGet(ctx context.Context, u user.Info, nn types.NamespacedName) error {
	ok, err := p.allowed(ctx, p.reviewer, u, nn, "get", "")
	if err != nil {
		return err
	}
	if !ok {
		return refusef(http.StatusForbidden, "%s may not get Connector %s", u.GetName(), nn)
	}
	return nil
}

// authorizeUse checks, with enable-connector-proxy-permissions, that u may use the Connector
// through the proxy for r, with each verb it needs (useVerbs) (SPEC §4.4): connectors/proxy,
// namespace-wide or scoped to the token's Pod (connectors/proxy/v1/pod/<ns>/<pod>). Without
// the flag, get (see authorizeGet) is all it takes. Methods that are never proxied are
// refused either way.
func (p *Proxy) authorizeUse(ctx context.Context, u user.Info, nn types.NamespacedName, r *http.Request) error {
	verbs, err := useVerbs(r)
	if err != nil || !p.flags.Flags().ProxyPermissions {
		return err
	}
	for _, v := range verbs {
		err := p.mayUse(ctx, u, nn, v.verb)
		var rf *refusal
		if errors.As(err, &rf) && rf.status == http.StatusForbidden && v.why != "" {
			return refusef(rf.status, "%s: %s asks for it", rf.msg, v.why)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// mayUse checks that u may verb connectors/proxy of nn, namespace-wide or for its Pod. The
// namespace-wide question goes first, unless the node holds the Pod's own granted request for
// the Connector: an approved Pod is usually denied namespace-wide, and that denial would cost a
// review of its own each time its answer expires. Either order gives the same answer.
func (p *Proxy) mayUse(ctx context.Context, u user.Info, nn types.NamespacedName, verb string) error {
	// A namespace-wide grant answered from the cache builds no Pod-scoped name: the hot path.
	if allowed, ok := p.perms.cached(u, nn, verb, "proxy"); ok && allowed {
		return nil
	}
	scopes, n := [2]string{"proxy"}, 1
	pod, isPod := podOfUser(u)
	if isPod {
		scopes[1], n = podScopedPrefix+pod.namespace+"/"+pod.name, 2
		if allowed, ok := p.perms.cached(u, nn, verb, scopes[1]); ok && allowed {
			return nil
		}
		if own, err := p.cfg.PodGrants.HoldsOwn(ctx, nn, pod.namespace, pod.name, pod.uid); err == nil && own {
			scopes[0], scopes[1] = scopes[1], scopes[0]
		}
	}
	for _, sub := range scopes[:n] {
		if ok, err := p.perms.allowed(ctx, p, u, nn, verb, sub); err != nil || ok {
			return err
		}
	}
	return refusef(http.StatusForbidden, "%s may not %s connectors/proxy of Connector %s", u.GetName(), verb, nn)
}

// podScopedPrefix begins the connectors subresource that grants connectors/proxy to one Pod.
const podScopedPrefix = "proxy/v1/pod/"

// allowedToUse answers one connectors/proxy question for the permissions cache: the reviewer's
// answer, and for a Pod-scoped grant that it is not an earlier Pod's of the same name
// (Config.PodGrants): RBAC names the Pod by name, an approval is for one Pod.
func (p *Proxy) allowedToUse(ctx context.Context, r Reviewer, u user.Info, nn types.NamespacedName, verb, subresource string) (bool, error) {
	ok, err := p.allowed(ctx, r, u, nn, verb, subresource)
	if err != nil || !ok || !strings.HasPrefix(subresource, podScopedPrefix) {
		return ok, err
	}
	pod, _ := podOfUser(u)
	foreign, err := p.cfg.PodGrants.OfAnotherPod(ctx, nn, pod.namespace, pod.name, pod.uid)
	if err != nil {
		return false, unavailable(ctx, "authorize", err)
	}
	return !foreign, nil
}

func (p *Proxy) allowed(ctx context.Context, r Reviewer, u user.Info, nn types.NamespacedName, verb, subresource string) (bool, error) {
	decision, _, err := r.Authorize(ctx, authorizer.AttributesRecord{
		User: u, Verb: verb, Namespace: nn.Namespace, Name: nn.Name,
		APIGroup: v1alpha1.GroupVersion.Group, APIVersion: v1alpha1.GroupVersion.Version,
		Resource: v1alpha1.ResourceConnectors, Subresource: subresource, ResourceRequest: true,
	})
	if err != nil {
		return false, unavailable(ctx, "authorize", err)
	}
	return decision == authorizer.DecisionAllow, nil
}

// podOf returns "<namespace>/<pod>" for a Pod-bound ServiceAccount token's user, else "".
func podOf(u user.Info) string {
	if pod, ok := podOfUser(u); ok {
		return pod.namespace + "/" + pod.name
	}
	return ""
}

// podKey is what tells u's Pod from any other: its UID, or "<namespace>/<pod>" for a token that
// carries none; "" when u is no Pod's.
func podKey(u user.Info) string {
	pod, ok := podOfUser(u)
	switch {
	case !ok:
		return ""
	case pod.uid != "":
		return pod.uid
	}
	return pod.namespace + "/" + pod.name
}

// clientToken takes the token from Authorization: Bearer, or the password of Basic.
func clientToken(h http.Header) string { return authorizationToken(h.Get("Authorization")) }

// authorizationToken is the token of an Authorization value: Bearer, or the Basic password.
func authorizationToken(auth string) string {
	if t, ok := strings.CutPrefix(auth, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if _, pass, ok := parseBasic(auth); ok {
		return pass
	}
	return ""
}

// proxyCredentials parses Proxy-Authorization: Basic base64("<ns>/<name>[,...]:<token>").
func proxyCredentials(h http.Header) (connectors []types.NamespacedName, token string, err error) {
	userPart, token, ok := parseBasic(h.Get("Proxy-Authorization"))
	if !ok {
		return nil, "", nil
	}
	if unescaped, err := url.PathUnescape(userPart); err == nil {
		userPart = unescaped
	}
	for _, item := range strings.Split(userPart, ",") {
		ns, name, ok := strings.Cut(strings.TrimSpace(item), "/")
		if !ok || ns == "" || name == "" {
			// Not quoted: a client given the proxy as http://<token>@host sends its token as
			// the user, and the answer is logged and printed by CI.
			return nil, "", refusef(http.StatusProxyAuthRequired, "the proxy user (%d bytes) is not a list of <namespace>/<connector>; the token goes in the password",
				len(item))
		}
		connectors = append(connectors, types.NamespacedName{Namespace: ns, Name: name})
	}
	return connectors, token, nil
}

func parseBasic(auth string) (userPart, pass string, ok bool) {
	enc, ok := strings.CutPrefix(auth, "Basic ")
	if !ok {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return "", "", false
	}
	userPart, pass, ok = strings.Cut(string(raw), ":")
	return userPart, pass, ok
}
