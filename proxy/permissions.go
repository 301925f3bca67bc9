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
	allowTTL time.Duration
	denyTTL  time.Duration
	epochs   *podEpochs
	cache    *expirable.LRU[string, decision]
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

func newPermissions(reviewer Reviewer, allowTTL, denyTTL time.Duration, size int, epochs *podEpochs) *permissions {
	p := &permissions{reviewer: reviewer, allowTTL: allowTTL, denyTTL: denyTTL, epochs: epochs,
		cache: expirable.NewLRU[string, decision](size, nil, max(allowTTL, denyTTL, time.Second))}
	cachemetrics.Register("proxy_permissions", p.cache.Len)
	return p
}

// allowed answers one connectors/proxy question for u, from the cache when it holds a
// decision that has not expired.
func (p *permissions) allowed(ctx context.Context, proxy *Proxy, u user.Info, nn types.NamespacedName, verb, subresource string) (bool, error) {
	key := permissionKey(podOf(u), u.GetName(), nn, verb, subresource)
	if d, ok := p.cache.Get(key); ok && time.Now().Before(d.expires) && p.epochs.unchanged(d.shard, d.tick) {
		return d.allowed, nil
	}
	tick, shard := p.epochs.now(), p.epochs.shardOf(u)
	ok, err := proxy.allowed(ctx, p.reviewer, u, nn, verb, subresource)
	if err != nil {
		return false, err
	}
	ttl := p.denyTTL
	if ok {
		ttl = p.allowTTL
	}
	if ttl > 0 {
		p.cache.Add(key, decision{allowed: ok, expires: time.Now().Add(ttl), tick: tick, shard: shard})
	}
	return ok, nil
}

func permissionKey(pod, userName string, nn types.NamespacedName, verb, subresource string) string {
	return pod + "\x00" + userName + "\x00" + nn.String() + "\x00" + verb + "\x00" + subresource
}
