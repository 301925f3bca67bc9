// Package access asks the API server who a token belongs to (TokenReview) and what a user may
// do (SubjectAccessReview), through k8s.io/apiserver's caching webhook authenticator and
// authorizer: tokens are kept only as keyed hashes, concurrent reviews of one token are
// coalesced, and each answer is cached for a configurable period.
package access

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/singleflight"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/token/cache"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	authorizationcel "k8s.io/apiserver/pkg/authorization/cel"
	tokenwebhook "k8s.io/apiserver/plugin/pkg/authenticator/token/webhook"
	authzwebhook "k8s.io/apiserver/plugin/pkg/authorizer/webhook"
	authzmetrics "k8s.io/apiserver/plugin/pkg/authorizer/webhook/metrics"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-connectors/connectors-csi/cachemetrics"
	"github.com/kube-connectors/connectors-csi/turns"
)

var (
	tokenReviews = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "connectors_tokenreviews_total",
		Help: "TokenReviews sent to the API server (cache misses), by HTTP code.",
	}, []string{"code"})
	subjectAccessReviews = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "connectors_subjectaccessreviews_total",
		Help: "SubjectAccessReviews sent to the API server (cache misses), by HTTP code.",
	}, []string{"code"})
	authorizationDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "connectors_authorization_decisions_total",
		Help: "Authorization questions answered, by reviewer (publish, proxy, proxy_permissions, connectorsapi, metrics, webhook), decision (allow, deny, error) and cache (hit, miss).",
	}, []string{"reviewer", "decision", "cache"})
	tokenAuthentications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "connectors_token_authentications_total",
		Help: "Tokens checked, by reviewer and result (accepted, rejected, malformed, other_node: of another node's Pod or of none, to the proxy of one node's Pods; error); the TokenReviews sent for them (cache misses) are connectors_tokenreviews_total.",
	}, []string{"reviewer", "result"})
	tokensAskedAgain = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "connectors_tokenreviews_asked_again_total",
		Help: "TokenReviews sent a second time, by reviewer, because the API server answered that the token has been invalidated, which it also answers when it could not read the token's Pod.",
	}, []string{"reviewer"})
)

func init() {
	prometheus.MustRegister(tokenReviews, subjectAccessReviews, authorizationDecisions, tokenAuthentications, tokensAskedAgain)
}

// Config sets the audiences tokens must carry and how long answers are cached.
type Config struct {
	// Audiences a token must carry; empty accepts the API server's own audiences (any token
	// the cluster accepts).
	Audiences []string
	TokenTTL  time.Duration // authenticated tokens
	AllowTTL  time.Duration // allowed SubjectAccessReviews
	DenyTTL   time.Duration // denied SubjectAccessReviews and rejected tokens
	// Name is the Reviewer's in metrics: the reviewer label of its answers, and its decision
	// cache's size as connectors_cache_entries{cache="authorization_<name>"}.
	Name string
	// Node, for a Reviewer of the Pod tokens of one node (the proxy's, --proxy-tokens=node),
	// refuses a token whose claims bind it to no Pod, or to a Pod of another node, with an
	// *OtherNodeError: locally, before the token cache keeps it and before any TokenReview
	// (the claims are not verified: a token naming this node is reviewed, and the review's
	// extras decide).
	Node string
	// Keys, for a Reviewer of ServiceAccount tokens only, refuse a token none of the issuer's
	// keys signed without a TokenReview; nil: not checked.
	Keys *IssuerKeys
	// Unexpiring, with Keys, also sends tokens without exp for review: those of
	// kubernetes.io/service-account-token Secrets, which a Prometheus PodMonitor can send.
	Unexpiring bool
	// InvalidatedRetry is how long to wait before asking once more about a token the API
	// server answered "has been invalidated" for (see invalidated); 0: the first answer stands.
	InvalidatedRetry time.Duration
	// Turns, when set, paces the SubjectAccessReviews sent (the cache's misses) by the
	// namespace of the user asked about (a ServiceAccount's; another user by name): one
	// tenant's storm of questions (thousands of volumes naming Connectors it may not get, each
	// asked again at kubelet's every retry) waits for its own turns, instead of queueing every
	// tenant's behind it in the client's rate limit. A turn that would not come before the
	// question's context ends is an error at once.
	Turns *turns.ByNamespace
}

// decisionCacheSize bounds the decisions a Reviewer keeps: a node's Pods times the Connectors
// each uses is far below it; past it the least recently used go first.
const decisionCacheSize = 8192

// Reviewer answers who and may-they questions with cached API server reviews. Only tokens
// that are well-formed, unexpired JWTs for the audiences are sent for review.
type Reviewer struct {
	audiences authenticator.Audiences
	tokens    authenticator.Token
	authz     authorizer.Authorizer
	// inflight coalesces concurrent identical authorizations: the webhook authorizer's cache
	// has no request coalescing, so when an entry expires under load every waiting request
	// would send its own SubjectAccessReview.
	inflight singleflight.Group
	// decisions answers repeated questions before the webhook authorizer, whose own cache
	// builds its key with json.Marshal and records metrics on every lookup: that was a tenth
	// of a proxied request's CPU and allocations (docs/benchmarks.md). Its TTLs are the
	// webhook cache's, so a decision lives no longer than it did.
	decisions         *expirable.LRU[string, decision]
	allowTTL, denyTTL time.Duration
	name              string
	turns             *turns.ByNamespace
}

type decision struct {
	decision authorizer.Decision
	reason   string
	expires  time.Time
}

// A failed review is not retried here: the client (kubelet, git) retries.
var once = wait.Backoff{Duration: 100 * time.Millisecond, Factor: 1, Steps: 1}

// New returns a Reviewer using the API server behind kube.
func New(kube kubernetes.Interface, cfg Config) (*Reviewer, error) {
	tokenAuth, err := tokenwebhook.NewFromInterface(kube.AuthenticationV1(), cfg.Audiences, once, 10*time.Second,
		tokenwebhook.AuthenticatorMetrics{
			RecordRequestTotal:   func(_ context.Context, code string) { tokenReviews.WithLabelValues(code).Inc() },
			RecordRequestLatency: func(context.Context, string, float64) {},
		})
	if err != nil {
		return nil, err
	}
	if cfg.Unexpiring && cfg.Keys == nil {
		return nil, errors.New("tokens without exp are reviewed only with the issuer's keys to check them")
	}
	authz, err := authzwebhook.NewFromInterface(kube.AuthorizationV1(), cfg.AllowTTL, cfg.DenyTTL, once,
		authorizer.DecisionNoOpinion, sarMetrics{}, authorizationcel.NewDefaultCompiler())
	if err != nil {
		return nil, err
	}
	r := &Reviewer{
		audiences: cfg.Audiences,
		tokens: cache.New(jwtPrecheck{audiences: cfg.Audiences, node: cfg.Node, keys: cfg.Keys, unexpiring: cfg.Unexpiring, next: rejectionsAreAnswers{Token: tokenAuth, retry: cfg.InvalidatedRetry, reviewer: cfg.Name}, now: time.Now},
			false, cfg.TokenTTL, cfg.DenyTTL),
		authz:     authz,
		decisions: expirable.NewLRU[string, decision](decisionCacheSize, nil, max(cfg.AllowTTL, cfg.DenyTTL, time.Second)),
		allowTTL:  cfg.AllowTTL,
		name:      cfg.Name,
		denyTTL:   cfg.DenyTTL,
		turns:     cfg.Turns,
	}
	if cfg.Name != "" && max(cfg.AllowTTL, cfg.DenyTTL) > 0 { // an uncached Reviewer has no cache to report
		cachemetrics.Register("authorization_"+cfg.Name, r.decisions.Len)
	}
	return r, nil
}

// AuthenticateToken returns the user a token belongs to, or ok=false when the API server does
// not accept it for the configured audiences.
func (r *Reviewer) AuthenticateToken(ctx context.Context, token string) (user.Info, bool, error) {
	if !jwtShaped(token) {
		refusedLocally.WithLabelValues("malformed").Inc()
		tokenAuthentications.WithLabelValues(r.name, "malformed").Inc()
		return nil, false, nil
	}
	if len(r.audiences) > 0 {
		ctx = authenticator.WithAudiences(ctx, r.audiences)
	}
	res, ok, err := r.tokens.AuthenticateToken(ctx, token)
	var otherNode *OtherNodeError
	switch {
	case errors.As(err, &otherNode):
		tokenAuthentications.WithLabelValues(r.name, "other_node").Inc()
		return nil, false, err
	case err != nil:
		tokenAuthentications.WithLabelValues(r.name, "error").Inc()
		return nil, false, err
	case !ok:
		tokenAuthentications.WithLabelValues(r.name, "rejected").Inc()
		return nil, false, nil
	}
	tokenAuthentications.WithLabelValues(r.name, "accepted").Inc()
	return res.User, true, nil
}

// Authorize asks whether attrs are allowed.
func (r *Reviewer) Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	key := attributesKey(attrs)
	if d, ok := r.decisions.Get(key); ok && time.Now().Before(d.expires) {
		authorizationDecisions.WithLabelValues(r.name, decisionLabel(d.decision, nil), "hit").Inc()
		return d.decision, d.reason, nil
	}
	v, err, _ := r.inflight.Do(key, func() (any, error) {
		if err := r.waitTurn(ctx, attrs.GetUser()); err != nil {
			return decision{}, err
		}
		d, reason, err := r.authz.Authorize(ctx, attrs)
		ttl := r.denyTTL
		if d == authorizer.DecisionAllow {
			ttl = r.allowTTL
		}
		if err == nil && ttl > 0 {
			r.decisions.Add(key, decision{decision: d, reason: reason, expires: time.Now().Add(ttl)})
		}
		return decision{decision: d, reason: reason}, err
	})
	d, _ := v.(decision)
	authorizationDecisions.WithLabelValues(r.name, decisionLabel(d.decision, err), "miss").Inc()
	return d.decision, d.reason, err
}

// waitTurn waits for the turn of u's namespace to send a review, when reviews are paced.
func (r *Reviewer) waitTurn(ctx context.Context, u user.Info) error {
	if r.turns == nil || u == nil {
		return nil
	}
	asker := "user " + u.GetName()
	if ns, _, err := serviceaccount.SplitUsername(u.GetName()); err == nil {
		asker = ns
	}
	if err := r.turns.Wait(ctx, asker); err != nil {
		return fmt.Errorf("the %s reviews of %s are paced and its next turn would come too late: %w", r.name, asker, err)
	}
	return nil
}

// decisionLabel is a decision's value of the decision label.
func decisionLabel(d authorizer.Decision, err error) string {
	switch {
	case err != nil:
		return "error"
	case d == authorizer.DecisionAllow:
		return "allow"
	}
	return "deny" // denied, or no opinion: both refuse
}

// attributesKey identifies a resource authorization question: every attribute the webhook
// authorizer sends, NUL-separated, the user's extra sorted by key. One allocation.
func attributesKey(a authorizer.Attributes) string {
	u := a.GetUser()
	fields := [...]string{u.GetName(), u.GetUID(), a.GetVerb(), a.GetNamespace(), a.GetAPIGroup(), a.GetAPIVersion(),
		a.GetResource(), a.GetSubresource(), a.GetName(), a.GetPath()}
	groups, extra := u.GetGroups(), u.GetExtra()
	keys := make([]string, 0, 8) // on the stack for the few keys of a token's extra
	size := 0
	for _, f := range fields {
		size += len(f) + 1
	}
	for _, g := range groups {
		size += len(g) + 1
	}
	for k, vs := range extra {
		keys = append(keys, k)
		size += len(k) + 2
		for _, v := range vs {
			size += len(v) + 1
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	b.Grow(size + 1)
	for _, f := range fields {
		b.WriteString(f)
		b.WriteByte(0)
	}
	for _, g := range groups {
		b.WriteString(g)
		b.WriteByte(1) // groups and extra values are lists: their own separator
	}
	b.WriteByte(0)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		for _, v := range extra[k] {
			b.WriteString(v)
			b.WriteByte(1)
		}
		b.WriteByte(0)
	}
	return b.String()
}

// rejectionsAreAnswers turns the webhook authenticator's "not authenticated, because ..."
// (reported as an error carrying the TokenReview's status.error) into a plain rejection, so that
// it is cached and told apart from a failure to ask. Failures to ask are client-go errors: API
// statuses, URL and network errors, and context ends. An answer that the token "has been
// invalidated" is asked once more after retry first: the API server gives it both for a token
// whose Pod (or Secret, or Node) is gone and for one whose Pod it failed to read, and taken at
// once, a live Pod's request would be refused (Maven, for one, gives up at a 407) and the
// refusal kept for --authorization-deny-ttl.
type rejectionsAreAnswers struct {
	authenticator.Token
	retry    time.Duration
	reviewer string
}

func (r rejectionsAreAnswers) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	res, ok, err := r.Token.AuthenticateToken(ctx, token)
	if err != nil && r.retry > 0 && invalidated(err) {
		tokensAskedAgain.WithLabelValues(r.reviewer).Inc()
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(r.retry):
		}
		res, ok, err = r.Token.AuthenticateToken(ctx, token)
	}
	if err != nil && !isFailureToAsk(err) {
		return nil, false, nil
	}
	return res, ok, err
}

// invalidated tells whether a TokenReview's status.error is the API server's answer for a
// token bound to an object it did not get: kube's ServiceAccount token validator answers
// "service account token has been invalidated" (before 1.21 "Token has been invalidated") for
// any error reading the token's Pod, Secret or Node, not only for one that is gone. The text
// is all a TokenReview says; a union of the API server's authenticators joins their messages,
// so it is looked for anywhere in the answer, which never quotes the token.
func invalidated(err error) bool {
	return !isFailureToAsk(err) && strings.Contains(strings.ToLower(err.Error()), "has been invalidated")
}

func isFailureToAsk(err error) bool {
	var urlErr *url.Error
	var netErr net.Error
	var status apierrors.APIStatus
	return errors.As(err, &urlErr) || errors.As(err, &netErr) || errors.As(err, &status) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || rateLimited(err)
}

// rateLimited tells whether err wraps client-go's refusal to send (clientRateLimited starts its
// message): by an error of the chain, not anywhere in the text, which may quote what a token
// claims.
func rateLimited(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if strings.HasPrefix(err.Error(), clientRateLimited) {
			return true
		}
	}
	return false
}

// clientRateLimited starts client-go's error for a request its rate limiter will not send
// before the request's deadline (the limiter's own error is untyped, and so is client-go's
// wrapping of it). Taken for an answer, a flood of reviews would have a valid token refused,
// and the refusal kept for --authorization-deny-ttl.
const clientRateLimited = "client rate limiter Wait returned an error"

// sarMetrics counts SubjectAccessReview round trips.
type sarMetrics struct {
	authzmetrics.NoopWebhookMetrics
	authzmetrics.NoopAuthorizerMetrics
}

func (sarMetrics) RecordRequestTotal(_ context.Context, code string) {
	subjectAccessReviews.WithLabelValues(code).Inc()
}
func (sarMetrics) RecordRequestLatency(context.Context, string, float64) {}

// Reviews returns how many TokenReviews and SubjectAccessReviews were sent so far.
func Reviews() (tokenReviewCount, subjectAccessReviewCount float64) {
	return sum(tokenReviews), sum(subjectAccessReviews)
}

func sum(v *prometheus.CounterVec) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() { v.Collect(ch); close(ch) }()
	var total float64
	for m := range ch {
		var out dto.Metric
		if m.Write(&out) == nil {
			total += out.GetCounter().GetValue()
		}
	}
	return total
}
