package proxy

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/access"
)

// answerGuard ends a request's exchange with its tool once the caller is no longer allowed.
// A request is checked when it starts; an answer that streams on (a watch, a followed log,
// server-sent events, a long poll) would otherwise carry what the tool sends, got with the
// injected credential, to a caller whose grant was revoked or whose token was refused since,
// for as long as the tool sends: outside a tunnel without any bound. So every AnswerRecheck
// while the exchange lasts, the caller is checked again through the proxy's caches
// (stillAllowed), as an upgraded connection is, and the first refusal ends the exchange (end).
// A check that gets no answer keeps it: the next one asks again. Most requests end before the
// first check, and cost a timer.
type answerGuard struct {
	p       *Proxy
	token   string
	user    user.Info
	nn      types.NamespacedName
	request *http.Request // whose verbs are asked again
	end     func(refusal error)
	timer   *time.Timer

	mu      sync.Mutex
	stopped bool
}

// guardAnswer starts guarding the exchange of r along rt; end ends it, with the refusal. stop
// must be called when the exchange ends: end is not called after it returns.
func (p *Proxy) guardAnswer(rt *route, r *http.Request, end func(refusal error)) *answerGuard {
	g := &answerGuard{p: p, token: rt.token, user: rt.user, nn: types.NamespacedName{Namespace: rt.connector.Namespace, Name: rt.connector.Name},
		request: r, end: end}
	g.timer = time.AfterFunc(p.answerRecheck(), g.check)
	return g
}

// answerRecheck is Config.AnswerRecheck, or UpgradeRecheck when it is not set.
func (p *Proxy) answerRecheck() time.Duration {
	if p.cfg.AnswerRecheck > 0 {
		return p.cfg.AnswerRecheck
	}
	return p.cfg.UpgradeRecheck
}

// guardedRequest stands for a fast-lane request of method in a recheck: the lane takes no
// request whose verbs anything but its method names (mayOverride).
func guardedRequest(method string) *http.Request {
	return &http.Request{Method: method, Header: http.Header{}, URL: &url.URL{}}
}

// answerRecheckTimeout bounds one recheck's reviews.
const answerRecheckTimeout = 10 * time.Second

func (g *answerGuard) check() {
	ctx, cancel := context.WithTimeout(context.Background(), answerRecheckTimeout)
	defer cancel()
	var refused error
	if access.ExpiredToken(g.token, time.Now()) && g.user != nil {
		// Its age alone ends no answer the token began (a clone that outlasts it: kubelet gave
		// the Pod a newer one); a deleted Pod's token is refused before it expires, and the
		// grants are still asked.
		refused = g.p.stillPermitted(ctx, g.user, g.nn, g.request)
	} else {
		refused = g.p.stillAllowed(ctx, g.token, g.nn, g.request)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.stopped:
	case refused != nil:
		g.stopped = true
		klog.FromContext(ctx).V(2).Info("Proxy ended an answer whose caller is no longer allowed", "connector", g.nn, "reason", refused.Error())
		g.end(refused)
	default:
		g.timer.Reset(g.p.answerRecheck())
	}
}

// stop ends the guard; end is not called once it returns.
func (g *answerGuard) stop() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	g.timer.Stop()
}
