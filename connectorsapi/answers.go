package connectorsapi

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The list calls (gitrefs, registry catalogs and tags) hand the tool's answers to libraries
// that read them whole: go-git reads a ref advertisement to its end, go-containerregistry
// follows a registry's next-page links until there are none. The tool is whatever a tenant's
// Connector names, so what they read is bounded here, per call and for the node (the driver
// serves every tenant on it).

// Default answer bounds (the driver's flags).
const (
	DefaultCallAnswerBytes = 8 << 20
	DefaultNodeAnswerBytes = 32 << 20
)

// answerHeadCharge is what each answer counts besides its body: a registry's pages may be
// empty, each with a next link.
const answerHeadCharge = 1 << 10

// AnswerLimits bound the bytes the Connectors API's list calls read from tools: per call, per
// caller (the namespace of its ServiceAccount, a user's own name: a tenant's calls together
// may hold a quarter of the node's bound, or one call's, whichever is more, so that one tenant
// stalling its tool's answers does not refuse every other's calls, also of Connectors they
// share, such as kube-public's) and for the node.
type AnswerLimits struct {
	perCall, perCaller, node int64

	mu       sync.Mutex       // also guards each callBudget's fields
	total    int64            // bytes held by the calls in flight
	byCaller map[string]int64 // of those, by caller (proxy.CallerOf)
}

// NewAnswerLimits bounds one call's answers to perCall bytes (with answerHeadCharge for each
// answer) and those of the calls in flight together to node bytes; 0 takes the default.
func NewAnswerLimits(perCall, node int64) *AnswerLimits {
	if perCall <= 0 {
		perCall = DefaultCallAnswerBytes
	}
	if node <= 0 {
		node = DefaultNodeAnswerBytes
	}
	return &AnswerLimits{perCall: perCall, perCaller: max(node/4, perCall), node: node, byCaller: map[string]int64{}}
}

// errAnswersRefused fails a read past a bound; the call's budget says which (callBudget.err).
var errAnswersRefused = errors.New("the tool's answers are over the Connectors API's bound")

// callerName names a caller of proxy.CallerOf in a message.
func callerName(caller string) string {
	if name, ok := strings.CutPrefix(caller, "user:"); ok {
		return "user " + name
	}
	return "namespace " + caller
}

// callBudget is one call's count of the bytes it read, held against its caller's and the
// node's bounds until the call ends (release). Its fields are guarded by its limits' mu.
type callBudget struct {
	limits *AnswerLimits
	caller string
	read   int64
	err    error // the bound a read went past, as a Status
}

func (l *AnswerLimits) newCall(caller string) *callBudget {
	return &callBudget{limits: l, caller: caller}
}

// defaultAnswerLimits serve a Server built without its own.
var defaultAnswerLimits = NewAnswerLimits(0, 0)

// take counts n more bytes read, or refuses them past a bound.
func (b *callBudget) take(n int64) error {
	l := b.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case b.err != nil:
	case b.read+n > l.perCall:
		b.err = errorf(http.StatusBadGateway, "BadGateway",
			"the tool's answers are larger than the Connectors API reads for one call (--api-call-max-answer-bytes, %d bytes)", l.perCall)
	case l.total+n > l.node || l.byCaller[b.caller]+n > l.perCaller:
		b.err = errorf(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			"the Connectors API on this node is reading as much of tools' answers as it may, for the calls of %s or for the node (--api-node-max-answer-bytes, %d bytes); try again", callerName(b.caller), l.node)
	default:
		b.read += n
		l.total += n
		l.byCaller[b.caller] += n
		return nil
	}
	return errAnswersRefused
}

// over is the bound a read went past, if any.
func (b *callBudget) over() error {
	b.limits.mu.Lock()
	defer b.limits.mu.Unlock()
	if errors.Is(b.err, errAnswersRefused) { // released, not a bound
		return nil
	}
	return b.err
}

// release gives the call's bytes back, and refuses any later read; err is the bound a read
// went past, if any.
func (b *callBudget) release() (err error) {
	l := b.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total -= b.read
	if l.byCaller[b.caller] -= b.read; l.byCaller[b.caller] == 0 {
		delete(l.byCaller, b.caller)
	}
	b.read, err = 0, b.err
	if b.err == nil {
		b.err = errAnswersRefused
	}
	return err
}

// transport counts the answers of next against the call's budget.
func (b *callBudget) transport(next http.RoundTripper) http.RoundTripper {
	return countedTransport{next: next, budget: b}
}

type countedTransport struct {
	next   http.RoundTripper
	budget *callBudget
}

func (t countedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if err := t.budget.take(answerHeadCharge); err != nil {
		_ = res.Body.Close()
		return nil, err
	}
	res.Body = &countedBody{ReadCloser: res.Body, budget: t.budget}
	return res, nil
}

type countedBody struct {
	io.ReadCloser
	budget *callBudget
}

func (c *countedBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		if terr := c.budget.take(int64(n)); terr != nil {
			return 0, terr
		}
	}
	return n, err
}
