package connectorsapi

import (
	"errors"
	"io"
	"net/http"
	"sync"

	"golang.org/x/sync/semaphore"
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

// AnswerLimits bound the bytes the Connectors API's list calls read from tools.
type AnswerLimits struct {
	perCall, node int64
	inFlight      *semaphore.Weighted
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
	return &AnswerLimits{perCall: perCall, node: node, inFlight: semaphore.NewWeighted(node)}
}

// errAnswersRefused fails a read past a bound; the call's budget says which (callBudget.err).
var errAnswersRefused = errors.New("the tool's answers are over the Connectors API's bound")

// callBudget is one call's count of the bytes it read, held against the node's bound until
// the call ends (release).
type callBudget struct {
	limits *AnswerLimits
	mu     sync.Mutex
	read   int64
	err    error // the bound a read went past, as a Status
}

func (l *AnswerLimits) newCall() *callBudget { return &callBudget{limits: l} }

// defaultAnswerLimits serve a Server built without its own.
var defaultAnswerLimits = NewAnswerLimits(0, 0)

// take counts n more bytes read, or refuses them past a bound.
func (b *callBudget) take(n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.err != nil:
	case b.read+n > b.limits.perCall:
		b.err = errorf(http.StatusBadGateway, "BadGateway",
			"the tool's answers are larger than the Connectors API reads for one call (--api-max-answer-bytes, %d bytes)", b.limits.perCall)
	case !b.limits.inFlight.TryAcquire(n):
		b.err = errorf(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			"the Connectors API on this node is reading as much of tools' answers as it may (--api-answers-max-bytes, %d bytes); try again", b.limits.node)
	default:
		b.read += n
		return nil
	}
	return errAnswersRefused
}

// release gives the call's bytes back to the node's bound, and refuses any later read; err is
// the bound a read went past, if any.
func (b *callBudget) release() (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limits.inFlight.Release(b.read)
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
