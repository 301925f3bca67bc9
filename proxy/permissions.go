package proxy

import (
	"context"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/kube-connectors/connectors-csi/cachemetrics"
)

// permissions caches the connectors/proxy decisions of enable-connector-proxy-permissions per
// Pod, longer than a revocation may take, because the node watches its own AccessRequests and
// ends a Pod's decisions (ForgetPod, through podEpochs) the moment one of them changes: a grant
// is usable at once, a revocation takes effect at once, and the SubjectAccessReviews of a busy
// Pod are few. Written here because the webhook authorizer's cache cannot drop entries by Pod.
type permissions struct {
	reviewer Reviewer // uncached: this is the cache
	ttl      permissionTTLs
	epochs   *podEpochs
	cache    *expirable.LRU[string, decision]
	now      func() time.Time
}

// permissionTTLs are how long the decisions are kept.
type permissionTTLs struct {
	allow, deny time.Duration
	// settle is how long after a Pod's AccessRequests changed the decisions of its group are
	// kept at most: the API server that answers may not have seen the RoleBinding the change
	// was about yet (its authorizer reads its own cache of them, which lags, more so behind
	// several API servers), and an allowing answer of a grant just revoked must not then be
	// kept for the whole allow TTL.
	settle time.Duration
}

type decision struct {
	allowed bool
	expires time.Time
	// tick is the podEpochs tick read before the review and shard the Pod's group: a change
	// of the Pod's AccessRequests after it, even one that landed while the review was in
	// flight, ends the decision.
	tick  uint64
	shard uint8
}

func newPermissions(reviewer Reviewer, ttl permissionTTLs, size int, epochs *podEpochs) *permissions {
	p := &permissions{reviewer: reviewer, ttl: ttl, epochs: epochs, now: time.Now,
		cache: expirable.NewLRU[string, decision](size, nil, max(ttl.allow, ttl.deny, time.Second))}
	cachemetrics.Register("proxy_permissions", p.cache.Len)
	return p
}

// cached is the decision the cache holds for one connectors/proxy question for u, if it
// holds one that has not expired.
func (p *permissions) cached(u user.Info, nn types.NamespacedName, verb, subresource string) (allowed, ok bool) {
	d, ok := p.cache.Get(permissionKey(podKey(u), u.GetName(), nn, verb, subresource))
	if !ok || !p.now().Before(d.expires) || !p.epochs.unchanged(d.shard, d.tick) {
		return false, false
	}
	return d.allowed, true
}

// allowed answers one connectors/proxy question for u, from the cache when it holds a
// decision that has not expired.
func (p *permissions) allowed(ctx context.Context, proxy *Proxy, u user.Info, nn types.NamespacedName, verb, subresource string) (bool, error) {
	if allowed, ok := p.cached(u, nn, verb, subresource); ok {
		return allowed, nil
	}
	tick, shard := p.epochs.now(), p.epochs.shardOf(u)
	ok, err := proxy.allowedToUse(ctx, p.reviewer, u, nn, verb, subresource)
	if err != nil {
		return false, err
	}
	if expires, keep := p.keptUntil(ok, shard); keep {
		p.cache.Add(permissionKey(podKey(u), u.GetName(), nn, verb, subresource), decision{allowed: ok, expires: expires, tick: tick, shard: shard})
	}
	return ok, nil
}

// keptUntil is when a decision made now for a Pod of the group expires: its TTL's end, or,
// within the group's settling after a change, the settling's end if that comes first; keep is
// false for a decision not to be kept at all (a TTL of 0).
func (p *permissions) keptUntil(allowed bool, shard uint8) (expires time.Time, keep bool) {
	ttl := p.ttl.deny
	if allowed {
		ttl = p.ttl.allow
	}
	now := p.now()
	expires = now.Add(ttl)
	if changed, ok := p.epochs.changedAt(shard); ok {
		if settled := changed.Add(p.ttl.settle); now.Before(settled) && settled.Before(expires) {
			expires = settled
		}
	}
	return expires, ttl > 0
}

// permissionKey keys a decision by the Pod's UID, not its name: an answer for a Pod is not
// one for a later Pod of the same name (Config.PodGrants).
func permissionKey(pod, userName string, nn types.NamespacedName, verb, subresource string) string {
	return pod + "\x00" + userName + "\x00" + nn.String() + "\x00" + verb + "\x00" + subresource
}
