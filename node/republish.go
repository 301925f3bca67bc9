package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/render"
)

// republishesUnchanged counts the republishes republishUnchanged served.
var republishesUnchanged = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "connectors_republishes_unchanged_total",
	Help: "Republishes (kubelet's periodic NodePublishVolume) served without authorizing again, their inputs unchanged.",
})

func init() { prometheus.MustRegister(republishesUnchanged) }

// republishUnchanged serves kubelet's periodic republish of a volume whose inputs have not
// changed since it was last authorized, within Config.RepublishRecheck: no API request (the
// Connectors and classes come from the caches, the CA from memory, the record from the
// store's memory) and, when the token is the same too, no write at all. A new token is written
// without authorizing again. done is false when the full publish must run.
func (s *Server) republishUnchanged(ctx context.Context, volumeID, target string, vr *volumeRequest, sources []render.Source, gid *int64) (done bool, err error) {
	rec, err := s.Records.Load(volumeID)
	if err != nil || rec == nil || rec.TargetPath != target || s.Config.RepublishRecheck <= 0 ||
		s.now().Sub(rec.AuthorizedAt) >= s.Config.RepublishRecheck ||
		rec.Fingerprint != fingerprint(vr, sources, gid, s.caFingerprint(ctx)) {
		return false, nil
	}
	token := tokenHash(vr.token)
	if rec.TokenSHA256 == token || rec.Rejected { // a rejected volume holds no token
		return true, nil
	}
	files, err := s.renderFiles(ctx, vr, sources)
	if err != nil {
		return true, err
	}
	updated := *rec
	updated.TokenSHA256 = token
	return true, s.fill(target, files, gid, &updated)
}

// fingerprint identifies everything a volume's content and authorization depend on but the
// token: the request's attributes, the Pod, the fsGroup, the Connectors' and classes' identity,
// generation (their spec), labels and annotations, and the proxy CA. Not their status: the
// status controller rewrites it at every recheck, and a republish would authorize again for
// nothing; a template that renders status fields sees them change at the next recheck.
func fingerprint(vr *volumeRequest, sources []render.Source, gid *int64, ca string) string {
	var versions []any
	for _, src := range sources {
		for _, o := range []metav1.Object{src.Connector, src.Class} {
			versions = append(versions, o.GetUID(), o.GetGeneration(), o.GetLabels(), o.GetAnnotations())
		}
		// The one part of a class's status a volume renders: its own proxy's address.
		versions = append(versions, src.Class.OwnProxyURL())
	}
	b, _ := json.Marshal([]any{vr.pod, vr.connectors, vr.configurations, vr.excluded, vr.params, gid, versions, ca})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// tokenHash is what the record keeps of a token: its SHA-256, never the token.
func tokenHash(token string) string { return sha256Hex(token) }

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// caFingerprint is a hash of the proxy CA, or "" when it cannot be had (the full publish then
// reports why).
func (s *Server) caFingerprint(ctx context.Context) string {
	ca, err := s.CA.CACert(ctx)
	if err != nil {
		return ""
	}
	return sha256Hex(ca)
}

func (s *Server) now() time.Time {
	if s.Clock != nil {
		return s.Clock()
	}
	return time.Now()
}
