package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
// without authorizing again, and so is content whose class or CA changed alone: what is
// authorized (the Pod may get the Connector, its AccessRequest holds) does not depend on them,
// and an edit of a class every volume of a cluster renders would otherwise authorize all of
// them again at their next republish. done is false when the full publish must run.
func (s *Server) republishUnchanged(ctx context.Context, volumeID, target string, vr *volumeRequest, sources []render.Source, gid *int64) (done bool, err error) {
	rec, err := s.Records.Load(volumeID)
	if err != nil || rec == nil || rec.TargetPath != target || s.Config.RepublishRecheck <= 0 ||
		s.now().Sub(rec.AuthorizedAt) >= s.Config.RepublishRecheck {
		return false, nil
	}
	content, auth := fingerprints(vr, sources, gid, s.caFingerprint(ctx))
	token := tokenHash(vr.token)
	switch {
	case rec.Fingerprint == content && (rec.TokenSHA256 == token || rec.Rejected): // a rejected volume holds no token
		return true, nil
	case rec.Fingerprint != content && (rec.AuthFingerprint != auth || rec.Rejected):
		return false, nil
	}
	files, err := s.renderFiles(ctx, vr, sources)
	if err != nil {
		return true, err
	}
	updated := *rec
	updated.Fingerprint, updated.TokenSHA256 = content, token
	// A renewal: what changed is the token, a class or the proxy CA, none of them the tenant's
	// to grow (its Connectors and approvals change what is authorized: the full publish).
	return true, s.fill(target, files, gid, &updated, true, true)
}

// fingerprints identify everything a volume's content depends on but the token (content: the
// request's attributes, the Pod, the fsGroup, the Connectors' and classes' identity, generation
// (their spec), labels and annotations, and the proxy CA), and what its authorization depends
// on (auth: the same but the classes and the CA). Not the status of either: the status
// controller rewrites it at every recheck, and a republish would authorize again for nothing;
// a template that renders status fields sees them change at the next recheck.
func fingerprints(vr *volumeRequest, sources []render.Source, gid *int64, ca string) (content, auth string) {
	var connectors, classes []any
	for _, src := range sources {
		connectors = append(connectors, src.Connector.GetUID(), src.Connector.GetGeneration(), src.Connector.GetLabels(), src.Connector.GetAnnotations())
		// The one part of a class's status a volume renders: its own proxy's address.
		classes = append(classes, src.Class.GetUID(), src.Class.GetGeneration(), src.Class.GetLabels(), src.Class.GetAnnotations(), src.Class.OwnProxyURL())
	}
	request := []any{vr.pod, vr.connectors, vr.configurations, vr.excluded, vr.params, gid, connectors}
	return hashJSON(append(request, classes, ca)), hashJSON(request)
}

func hashJSON(v any) string {
	b, _ := json.Marshal(v)
	return sha256Hex(string(b))
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
