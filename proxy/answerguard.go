package proxy

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/kube-connectors/connectors-csi/access"
)

// answerGuard ends a request's exchange with its tool once the caller is no longer allowed.
// A request is checked when it starts; an answer that streams on (a watch, a followed log,
// server-sent events, a long poll) would otherwise carry what the tool sends, got with the
// injected credential, to a caller whose grant was revoked or whose token was refused since,
// for as long as the tool sends: outside a tunnel without any bound. So every AnswerRecheck
// while the exchange lasts, the caller is checked again through the caches (check), as an
// upgraded connection is, and the first refusal ends the exchange (end). A check that gets no
// answer keeps it: the next one asks again. Most requests end before the first check, and
// cost a timer.
type answerGuard struct {
	every time.Duration
	check func(context.Context) error
	end   func(refusal error)
	timer *time.Timer

	mu      sync.Mutex
	stopped bool
}

// newAnswerGuard runs check every interval until it refuses, then ends the exchange with end.
// stop must be called when the exchange ends: end is not called after it returns.
func newAnswerGuard(every time.Duration, check func(context.Context) error, end func(refusal error)) *answerGuard {
	g := &answerGuard{every: every, check: check, end: end}
	g.timer = time.AfterFunc(every, g.recheck)
	return g
}

// guardAnswer starts guarding the exchange of r along rt (a request with a Pod token); end
// ends it, with the refusal.
func (p *Proxy) guardAnswer(rt *route, r *http.Request, end func(refusal error)) *answerGuard {
	token, u := rt.token, rt.user
	nn := types.NamespacedName{Namespace: rt.connector.Namespace, Name: rt.connector.Name}
	return newAnswerGuard(p.answerRecheck(), func(ctx context.Context) error {
		if access.ExpiredToken(token, time.Now()) && u != nil {
			// Its age alone ends no answer the token began (a clone that outlasts it: kubelet
			// gave the Pod a newer one); a deleted Pod's token is refused before it expires,
			// and the grants are still asked.
			return p.stillPermitted(ctx, u, nn, r)
		}
		return p.stillAllowed(ctx, token, nn, r)
	}, end)
}

// GuardAnswer guards an exchange of the Connectors API (Forward, or a call of a class's API
// service) as the proxy guards its own: every AnswerRecheck while it lasts, check asks again
// whether the caller is still allowed what the call was, and its first refusal (a non-nil
// error; Refused for its status) cancels the returned context with the refusal as its cause.
// stop must be called when the exchange ends.
func (p *Proxy) GuardAnswer(ctx context.Context, check func(context.Context) error) (guarded context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	g := newAnswerGuard(p.answerRecheck(), check, cancel)
	return ctx, func() { g.stop(); cancel(nil) }
}

// Refused is a refusal with its HTTP status, as the proxy answers its own (Status reads it).
func Refused(status int, msg string) error {
	return &refusal{status: status, msg: msg}
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

func (g *answerGuard) recheck() {
	ctx, cancel := context.WithTimeout(context.Background(), answerRecheckTimeout)
	defer cancel()
	refused := g.check(ctx)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.stopped:
	case refused != nil:
		g.stopped = true
		klog.FromContext(ctx).V(2).Info("Ended an answer whose caller is no longer allowed", "reason", refused.Error())
		g.end(refused)
	default:
		g.timer.Reset(g.every)
	}
}

// stop ends the guard; end is not called once it returns.
func (g *answerGuard) stop() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	g.timer.Stop()
}
