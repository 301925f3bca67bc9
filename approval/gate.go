package approval

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilcache "k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/node"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/singlecall"
)

// Gate is the publish side of the approval flow (SPEC §6.3–6.4). With enable-connectors-approval
// and enable-connector-proxy-permissions on, a Pod may use a Connector through the proxy only
// with connectors/proxy; when it lacks it and an AccessPolicy gates the Connector, the Gate
// creates (or reuses) the Pod's AccessRequest and waits, through a watch, for the controller's
// verdict.
type Gate struct {
	Authz Authorizer
	// Client reads AccessPolicies and creates and annotates AccessRequests, uncached.
	Client client.Client
	// Requests is the node's cache of its own AccessRequests, each watched by name (a node
	// caches nothing of other nodes' Pods); Changes says when one changed.
	Requests RequestCache
	Changes  *Changes
	Flags    *features.Source
	// Wait bounds how long a publish waits for a pending request.
	Wait time.Duration
	// NodeID labels the requests this node makes, so that it watches only its own.
	NodeID string
	// Gating remembers whether AccessPolicies gate a Connector; nil lists them at each ask.
	Gating *GatingMemo
}

// RequestCache is the node's cache of its own AccessRequests (objectcache.Requests): Get reads
// only the requests it watches; Lookup watches one it finds; Follow watches one the node made;
// Hold keeps one watched while a volume's record names it, until Release.
type RequestCache interface {
	client.Reader
	Lookup(ctx context.Context, nn types.NamespacedName) (*v1alpha1.AccessRequest, error)
	Follow(ar *v1alpha1.AccessRequest)
	Hold(nn types.NamespacedName)
	Release(nn types.NamespacedName)
	// Watched returns the requests the cache holds.
	Watched() []*v1alpha1.AccessRequest
}

// Admit decides whether the Pod may use the Connector now.
func (g *Gate) Admit(ctx context.Context, pod records.Pod, c *v1alpha1.Connector) (*node.Admission, error) {
	if !g.Flags.Flags().ApprovalEffective() {
		return &node.Admission{Granted: true}, nil
	}
	// A request already made for this Pod decides, so that its grant is recorded with the
	// volume and revoked when the volume goes.
	want := g.requestFor(pod, c)
	existing, err := g.Requests.Lookup(ctx, client.ObjectKeyFromObject(want))
	// A revoked one decides too, for good (see verdict): asking for connectors/proxy first would
	// cost two reviews at each republish for the rest of the Pod's life.
	switch {
	case err == nil && sameRequest(existing.Spec, want.Spec) && existing.Labels[v1alpha1.LabelNode] != want.Labels[v1alpha1.LabelNode]:
		// Made by someone else, who may not label it for this node: ensureRequest labels it.
		existing, err = g.ensureRequest(ctx, want)
		if err != nil {
			return nil, err
		}
		return g.await(ctx, existing)
	case err == nil && sameRequest(existing.Spec, want.Spec):
		return g.await(ctx, existing)
	case err == nil:
		// Labelled for this node by whoever else may create requests: its verdict is not this
		// Pod's (ensureRequest says so).
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	allowed, err := g.hasProxyPermission(ctx, pod, c)
	if err != nil {
		return nil, err
	}
	if allowed {
		return &node.Admission{Granted: true}, nil
	}
	gated, err := g.gated(ctx, c)
	if err != nil {
		return nil, err
	}
	if !gated {
		return nil, &node.Denied{Connector: types.NamespacedName{Namespace: c.Namespace, Name: c.Name},
			Reason: fmt.Sprintf("ServiceAccount %s/%s lacks connectors/proxy on it and no AccessPolicy offers approval", pod.Namespace, pod.ServiceAccount)}
	}
	ar, err := g.ensureRequest(ctx, want)
	if err != nil {
		return nil, err
	}
	g.Requests.Follow(ar)
	return g.await(ctx, ar)
}

// hasProxyPermission asks for connectors/proxy, namespace-wide or scoped to the Pod; a
// Pod-scoped one counts only if it is not an earlier Pod's of the same name (PodGrants): then
// the Pod asks for its own approval.
func (g *Gate) hasProxyPermission(ctx context.Context, pod records.Pod, c *v1alpha1.Connector) (bool, error) {
	u := &user.DefaultInfo{
		Name:   fmt.Sprintf("system:serviceaccount:%s:%s", pod.Namespace, pod.ServiceAccount),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + pod.Namespace, user.AllAuthenticated},
	}
	podScoped := fmt.Sprintf("proxy/v1/pod/%s/%s", pod.Namespace, pod.Name)
	for _, sub := range []string{"proxy", podScoped} {
		d, _, err := g.Authz.Authorize(ctx, authorizer.AttributesRecord{User: u, Verb: "get", Namespace: c.Namespace, Name: c.Name,
			APIGroup: v1alpha1.GroupVersion.Group, APIVersion: v1alpha1.GroupVersion.Version,
			Resource: v1alpha1.ResourceConnectors, Subresource: sub, ResourceRequest: true})
		if err != nil {
			return false, err
		}
		if d != authorizer.DecisionAllow {
			continue
		}
		if sub != podScoped {
			return true, nil
		}
		grants := PodGrants{Local: g.Requests, Live: g.Client}
		foreign, err := grants.OfAnotherPod(ctx, types.NamespacedName{Namespace: c.Namespace, Name: c.Name}, pod.Namespace, pod.Name, pod.UID)
		return err == nil && !foreign, err
	}
	return false, nil
}

// gated tells whether an AccessPolicy of c's namespace offers approval for c.
func (g *Gate) gated(ctx context.Context, c *v1alpha1.Connector) (bool, error) {
	if g.Gating == nil {
		return listGated(ctx, g.Client, c)
	}
	return g.Gating.gated(ctx, g.Client, c)
}

// listGated reads the AccessPolicies of c's namespace, from the API server's watch cache, and
// tells whether one offers approval for c.
func listGated(ctx context.Context, r client.Reader, c *v1alpha1.Connector) (bool, error) {
	var policies v1alpha1.AccessPolicyList
	if err := r.List(ctx, &policies, client.InNamespace(c.Namespace), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}}); err != nil {
		return false, err
	}
	for _, p := range policies.Items {
		if p.Spec.CheckGrantedPermission != nil && Selects(&p.Spec.Connector, c) {
			return true, nil
		}
	}
	return false, nil
}

// GatingMemo remembers, for a while, whether AccessPolicies gate a Connector (by its name, UID
// and resourceVersion: its name and labels decide). A publish the gate denies (no connectors/proxy,
// no policy) is retried by kubelet, for every Pod that mounts the Connector, on every node:
// each asked for every policy of the namespace, whole, and a tenant's policies may be many and
// large. Concurrent asks of one Connector share one list.
type GatingMemo struct {
	ttl     time.Duration
	answers *utilcache.LRUExpireCache
	lists   singleflight.Group
}

// gatingListTimeout bounds a list of the AccessPolicies a GatingMemo makes.
const gatingListTimeout = 30 * time.Second

// NewGatingMemo remembers size answers for ttl each; nil for a ttl of 0 (remember nothing).
func NewGatingMemo(size int, ttl time.Duration) *GatingMemo {
	if ttl <= 0 {
		return nil
	}
	return &GatingMemo{ttl: ttl, answers: utilcache.NewLRUExpireCache(size)}
}

func (m *GatingMemo) gated(ctx context.Context, r client.Reader, c *v1alpha1.Connector) (bool, error) {
	key := c.Namespace + "/" + c.Name + "/" + string(c.UID) + "/" + c.ResourceVersion
	if gated, ok := m.answers.Get(key); ok {
		return gated.(bool), nil
	}
	return singlecall.Do(ctx, &m.lists, key, gatingListTimeout, func(ctx context.Context) (bool, error) {
		gated, err := listGated(ctx, r, c)
		if err == nil {
			m.answers.Add(key, gated, m.ttl)
		}
		return gated, err
	})
}

// RequestName is the AccessRequest of a Pod for a Connector: readable, unique by the Pod's UID,
// and a DNS subdomain however long the names (a cut name ending in "." or "-" would make
// ".-" before the suffix).
func RequestName(connector string, pod records.Pod) string {
	sum := sha256.Sum256([]byte(pod.UID + "/" + connector))
	suffix := hex.EncodeToString(sum[:4])
	name := connector + "-" + pod.Name
	if max := validation.DNS1123SubdomainMaxLength - len(suffix) - 1; len(name) > max {
		name = strings.TrimRight(name[:max], ".-")
	}
	return name + "-" + suffix
}

// requestFor is the request this node makes for the Pod to use the Connector.
func (g *Gate) requestFor(pod records.Pod, c *v1alpha1.Connector) *v1alpha1.AccessRequest {
	return &v1alpha1.AccessRequest{
		ObjectMeta: metav1.ObjectMeta{Name: RequestName(c.Name, pod), Namespace: c.Namespace, Labels: requestLabels(c.Name, g.NodeID, pod)},
		Spec: v1alpha1.AccessRequestSpec{
			Subject:      rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: pod.ServiceAccount, Namespace: pod.Namespace},
			ConnectorRef: v1alpha1.LocalObjectRef{Name: c.Name},
			Context: v1alpha1.AccessContext{ObjectRef: v1alpha1.ContextObjectRef{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, Namespace: pod.Namespace, UID: types.UID(pod.UID)}},
		},
	}
}

// ensureRequest creates want, or finds it made already; one of its name that asks for anything
// else is refused, and one that asks the same but is not labelled for this node (made by
// someone else, whom the admission policy lets not label it) is labelled for this node, as
// its own are (the node's label says which node revokes a request whose record it lost).
func (g *Gate) ensureRequest(ctx context.Context, want *v1alpha1.AccessRequest) (*v1alpha1.AccessRequest, error) {
	ar := want.DeepCopy()
	c := types.NamespacedName{Namespace: ar.Namespace, Name: ar.Spec.ConnectorRef.Name}
	err := g.Client.Create(ctx, ar)
	if !apierrors.IsAlreadyExists(err) {
		return ar, err
	}
	if err = g.Client.Get(ctx, client.ObjectKeyFromObject(ar), ar); err != nil {
		return nil, err
	}
	if !sameRequest(ar.Spec, want.Spec) {
		// Not one this node made: whoever else may create requests could have named it so,
		// for another Connector, and its verdict would be taken for this one's.
		return nil, &node.Denied{Connector: c,
			Reason: fmt.Sprintf("AccessRequest %s/%s exists and asks for another Connector, subject or Pod than this Pod's request; it is not used (delete it)", ar.Namespace, ar.Name)}
	}
	if ar.Labels[v1alpha1.LabelNode] == want.Labels[v1alpha1.LabelNode] {
		return ar, nil
	}
	before := ar.DeepCopy()
	if ar.Labels == nil {
		ar.Labels = map[string]string{}
	}
	maps.Copy(ar.Labels, want.Labels)
	return ar, g.Client.Patch(ctx, ar, client.MergeFrom(before))
}

// sameRequest tells whether two requests ask the same: one subject, one Connector, one Pod.
func sameRequest(a, b v1alpha1.AccessRequestSpec) bool {
	return a.Subject == b.Subject && a.ConnectorRef == b.ConnectorRef && a.Context.ObjectRef == b.Context.ObjectRef
}

// await waits for the request's verdict, up to g.Wait, from the node's cache of its requests.
func (g *Gate) await(ctx context.Context, ar *v1alpha1.AccessRequest) (*node.Admission, error) {
	if adm := verdict(ar); adm != nil {
		return adm, nil
	}
	ctx, cancel := context.WithTimeout(ctx, g.Wait)
	defer cancel()
	nn := client.ObjectKeyFromObject(ar)
	changed, unsubscribe := g.Changes.Subscribe(nn)
	defer unsubscribe()
	latest := ar
	for {
		// Subscribed first, read second: a change between the two is not missed.
		var got v1alpha1.AccessRequest
		if err := g.Requests.Get(ctx, nn, &got); err == nil {
			latest = &got
			if adm := verdict(&got); adm != nil {
				return adm, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			// Still pending as far as we know; kubelet retries the publish.
			return pending(latest), nil
		}
	}
}

// verdict is the request's final answer, or nil while it is pending.
func verdict(ar *v1alpha1.AccessRequest) *node.Admission {
	ready := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionReady)
	check := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessCheckReady)
	name := ar.Namespace + "/" + ar.Name
	switch {
	case revoked(ar):
		// Final: the controller grants a revoked request nothing again (a Connector deleted and
		// made again finds its Pods' requests so).
		return &node.Admission{AccessRequest: name, Revoked: true, Message: "it was revoked, for good for this Pod (a new Pod asks anew): " + revokedWhy(ar)}
	case ready != nil && ready.Status == metav1.ConditionTrue:
		return &node.Admission{Granted: true, AccessRequest: name}
	case ready != nil && (ready.Reason == v1alpha1.ReasonSubjectMismatch || ready.Reason == v1alpha1.ReasonInvalidRoleTemplate ||
		ready.Reason == v1alpha1.ReasonConnectorNotMounted):
		return &node.Admission{AccessRequest: name, Failed: true, Message: ready.Message}
	case check != nil && (check.Reason == v1alpha1.ReasonRejected || check.Reason == v1alpha1.ReasonFailed):
		return &node.Admission{AccessRequest: name, Rejected: check.Reason == v1alpha1.ReasonRejected,
			Failed: check.Reason == v1alpha1.ReasonFailed, Message: check.Message}
	}
	return nil
}

// revokedWhy is what a revoked request says of its revocation.
func revokedWhy(ar *v1alpha1.AccessRequest) string {
	return meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessPermissionSync).Message
}

// pending is the admission of a request still waiting: the message names what it waits for.
func pending(ar *v1alpha1.AccessRequest) *node.Admission {
	msg := "waiting for the approval controller to evaluate it"
	if check := meta.FindStatusCondition(ar.Status.Conditions, v1alpha1.ConditionAccessCheckReady); check != nil {
		msg = check.Message
	}
	return &node.Admission{AccessRequest: ar.Namespace + "/" + ar.Name, Message: msg}
}

// RevokePod revokes the requests this node made for the Pod of uid. With recordLost, what a
// volume whose record is lost held: they are listed by the node's label, from the API
// server's watch cache, for a lost record names none (rare: a power loss before the record
// reached the disk). Otherwise, for a volume never published (the Pod deleted while its
// publish waited), those the node watches: a list of every request in the cluster at each
// such unpublish would cost the API server time in proportion to them all.
func (g *Gate) RevokePod(ctx context.Context, uid string, recordLost bool) error {
	var candidates []*v1alpha1.AccessRequest
	if recordLost {
		var list v1alpha1.AccessRequestList
		if err := g.Client.List(ctx, &list, client.MatchingLabels{v1alpha1.LabelNode: LabelValue(g.NodeID)},
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}}); err != nil {
			return err
		}
		for i := range list.Items {
			candidates = append(candidates, &list.Items[i])
		}
	} else {
		candidates = g.Requests.Watched()
	}
	var names []string
	for _, ar := range candidates {
		if ar.Spec.Context.ObjectRef.UID == types.UID(uid) && !revoked(ar) {
			names = append(names, ar.Namespace+"/"+ar.Name)
		}
	}
	slices.Sort(names)
	return g.Revoke(ctx, names)
}

// Revoke marks the requests a volume held as revoked, with the time; the controller deletes
// their grants. The node then lets their watches go. Whoever may create AccessRequests can
// make one of a name the node gives a Pod's request, or label one for this node and name any
// UID in it, and fill its annotations: one that cannot be patched (invalid, forbidden, too
// large) is logged and let go, not retried, or it would hold the Pod's unpublish for good
// (the controller revokes a request whose Pod is gone in any case); the others are revoked
// still. Another error is retried by kubelet, with the volume kept.
func (g *Gate) Revoke(ctx context.Context, requests []string) error {
	at := time.Now().UTC().Format(time.RFC3339)
	var errs []error
	for _, nn := range requests {
		key := requestKey(nn)
		ar := &v1alpha1.AccessRequest{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, AnnotationRevoked, at))
		err := client.IgnoreNotFound(g.Client.Patch(ctx, ar, client.RawPatch(types.MergePatchType, patch)))
		switch {
		case apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsRequestEntityTooLargeError(err):
			klog.FromContext(ctx).Error(err, "Not revoking an AccessRequest the node cannot patch", "accessRequest", nn)
		case err != nil:
			errs = append(errs, fmt.Errorf("revoke AccessRequest %s: %w", nn, err))
			continue
		}
		g.Requests.Release(key)
	}
	return errors.Join(errs...)
}

// Hold keeps the requests a volume's record names watched, until the node revokes them: their
// changes end the Pod's cached proxy decisions at once.
func (g *Gate) Hold(requests []string) {
	for _, nn := range requests {
		g.Requests.Hold(requestKey(nn))
	}
}

// requestKey is the key of a request a record names ("namespace/name").
func requestKey(nn string) types.NamespacedName {
	ns, name, _ := strings.Cut(nn, "/")
	return types.NamespacedName{Namespace: ns, Name: name}
}
