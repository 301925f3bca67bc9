// Package access asks the API server who a token belongs to (TokenReview) and what a user may
// do (SubjectAccessReview), through k8s.io/apiserver's caching webhook authenticator and
// authorizer: tokens are kept only as keyed hashes, concurrent reviews of one token are
// coalesced, and each answer is cached for a configurable period.
package access

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sync/singleflight"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/token/cache"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	authorizationcel "k8s.io/apiserver/pkg/authorization/cel"
	tokenwebhook "k8s.io/apiserver/plugin/pkg/authenticator/token/webhook"
	authzwebhook "k8s.io/apiserver/plugin/pkg/authorizer/webhook"
	authzmetrics "k8s.io/apiserver/plugin/pkg/authorizer/webhook/metrics"
	"k8s.io/client-go/kubernetes"
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
)

func init() { prometheus.MustRegister(tokenReviews, subjectAccessReviews) }

// Config sets the audiences tokens must carry and how long answers are cached.
type Config struct {
	// Audiences a token must carry; empty accepts the API server's own audiences (any token
	// the cluster accepts).
	Audiences []string
	TokenTTL  time.Duration // authenticated tokens
	AllowTTL  time.Duration // allowed SubjectAccessReviews
	DenyTTL   time.Duration // denied SubjectAccessReviews and rejected tokens
}

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
	authz, err := authzwebhook.NewFromInterface(kube.AuthorizationV1(), cfg.AllowTTL, cfg.DenyTTL, once,
		authorizer.DecisionNoOpinion, sarMetrics{}, authorizationcel.NewDefaultCompiler())
	if err != nil {
		return nil, err
	}
	return &Reviewer{
		audiences: cfg.Audiences,
		tokens: cache.New(jwtPrecheck{audiences: cfg.Audiences, next: rejectionsAreAnswers{tokenAuth}, now: time.Now},
			false, cfg.TokenTTL, cfg.DenyTTL),
		authz: authz,
	}, nil
}

// AuthenticateToken returns the user a token belongs to, or ok=false when the API server does
// not accept it for the configured audiences.
func (r *Reviewer) AuthenticateToken(ctx context.Context, token string) (user.Info, bool, error) {
	if !jwtShaped(token) {
		refusedLocally.WithLabelValues("malformed").Inc()
		return nil, false, nil
	}
	if len(r.audiences) > 0 {
		ctx = authenticator.WithAudiences(ctx, r.audiences)
	}
	res, ok, err := r.tokens.AuthenticateToken(ctx, token)
	if err != nil || !ok {
		return nil, false, err
	}
	return res.User, true, nil
}

// Authorize asks whether attrs are allowed.
func (r *Reviewer) Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	type answer struct {
		decision authorizer.Decision
		reason   string
	}
	v, err, _ := r.inflight.Do(attributesKey(attrs), func() (any, error) {
		d, reason, err := r.authz.Authorize(ctx, attrs)
		return answer{d, reason}, err
	})
	a, _ := v.(answer)
	return a.decision, a.reason, err
}

// attributesKey identifies a resource authorization question.
func attributesKey(a authorizer.Attributes) string {
	u := a.GetUser()
	var b strings.Builder
	for _, s := range []string{u.GetName(), u.GetUID(), strings.Join(u.GetGroups(), ","), a.GetVerb(), a.GetNamespace(),
		a.GetAPIGroup(), a.GetResource(), a.GetSubresource(), a.GetName(), a.GetPath()} {
		b.WriteString(s)
		b.WriteByte(0)
	}
	extra := u.GetExtra()
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strings.Join(extra[k], ","))
		b.WriteByte(0)
	}
	return b.String()
}

// rejectionsAreAnswers turns the webhook authenticator's "not authenticated, because ..."
// (reported as an error carrying the TokenReview's status.error) into a plain rejection, so that
// it is cached and told apart from a failure to ask. Failures to ask are client-go errors: API
// statuses, URL and network errors, and context ends.
type rejectionsAreAnswers struct{ authenticator.Token }

func (r rejectionsAreAnswers) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	res, ok, err := r.Token.AuthenticateToken(ctx, token)
	if err != nil && !isFailureToAsk(err) {
		return nil, false, nil
	}
	return res, ok, err
}

func isFailureToAsk(err error) bool {
	var urlErr *url.Error
	var netErr net.Error
	var status apierrors.APIStatus
	return errors.As(err, &urlErr) || errors.As(err, &netErr) || errors.As(err, &status) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

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
