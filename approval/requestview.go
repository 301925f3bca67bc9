package approval

import (
	"crypto/sha256"
	"encoding/json"
	"runtime"
	"sync"
	"weak"

	toolscache "k8s.io/client-go/tools/cache"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// RequestCacheView is the controller cache's transform for AccessRequests: it keeps of their
// metadata what the controller reads (no managed fields; of the annotations, AnnotationRevoked
// only: whoever may write AccessRequests could fill each with 256 KiB of them), and keeps each
// policy spec the requests record once. A request records the specs of the policies that gate
// its Connector (up to --accessrequest-max-policy-bytes), the same in every request a policy
// gates: a tenant's Pods, each mounting many Connectors of one bulky policy, would otherwise
// hold a copy per request in the controller, where every tenant's approvals and revocations
// run. The controller writes requests through their status alone, which leaves the metadata it
// does not hold as it is. Written here: sharing equal values of a type that is not comparable
// (unique.Make takes only comparable ones) is a map of weak pointers by their JSON's hash.
func RequestCacheView() toolscache.TransformFunc {
	specs := &sharedSpecs{byHash: map[[sha256.Size]byte]weak.Pointer[v1alpha1.AccessPolicySpec]{}}
	return func(in any) (any, error) {
		ar, ok := in.(*v1alpha1.AccessRequest)
		if !ok {
			return in, nil
		}
		ar.ManagedFields = nil
		if revoked, ok := ar.Annotations[AnnotationRevoked]; ok {
			ar.Annotations = map[string]string{AnnotationRevoked: revoked}
		} else {
			ar.Annotations = nil
		}
		for i := range ar.Status.Policies {
			if spec := ar.Status.Policies[i].PolicySpec; spec != nil {
				ar.Status.Policies[i].PolicySpec = specs.share(spec)
			}
		}
		return ar, nil
	}
}

// sharedSpecs holds a weak pointer to each policy spec the cache keeps, by its JSON's hash; a
// spec no request holds any longer is collected, and its entry removed.
type sharedSpecs struct {
	mu     sync.Mutex
	byHash map[[sha256.Size]byte]weak.Pointer[v1alpha1.AccessPolicySpec]
}

// share is the spec the cache already keeps that equals spec, or spec, kept from now on. The
// cache's objects are read, never written: a spec is shared by every request that records it.
func (s *sharedSpecs) share(spec *v1alpha1.AccessPolicySpec) *v1alpha1.AccessPolicySpec {
	b, err := json.Marshal(spec)
	if err != nil {
		return spec
	}
	key := sha256.Sum256(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if kept := s.byHash[key].Value(); kept != nil {
		return kept
	}
	s.byHash[key] = weak.Make(spec)
	runtime.AddCleanup(spec, s.forget, key)
	return spec
}

// forget removes key's entry once its spec is collected (unless another took its place).
func (s *sharedSpecs) forget(key [sha256.Size]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byHash[key].Value() == nil {
		delete(s.byHash, key)
	}
}
