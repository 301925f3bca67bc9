package approval

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/turns"
)

// kindAnswerTTL is how long a kindChecker keeps an answer: policies are reconciled on every
// Namespace and Connector change, and each check would cost two SelfSubjectAccessReviews.
const kindAnswerTTL = time.Minute

// Bounds of a kindChecker: the answers it keeps, and how many kinds it looks up a second (with
// a burst): the RESTMapper fetches the API server's discovery again for a group it does not
// know, under a lock every read of the controller's caches takes, and tenants name whatever
// kinds they like in their policies' checks, each reconciled at every Namespace change. A
// namespace's policies and requests take turns of their own within that (at most
// kindLookupsPerNamespace a second, a burst of kindLookupNamespaceBurst): one tenant's hundreds
// of kinds nobody serves, asked again each minute, would otherwise spend every lookup, and the
// kinds other tenants' checks need (ApprovalTask, after a leader change) would wait behind them.
const (
	kindAnswers              = 4096
	kindLookupsPerSecond     = 2
	kindLookupBurst          = 16
	kindLookupsPerNamespace  = 0.5
	kindLookupNamespaceBurst = 8
)

// kindChecker tells whether the controller may read a check kind (see check), remembering its
// answers for kindAnswerTTL.
type kindChecker struct {
	client      client.Client
	answers     *cache.LRUExpireCache // schema.GroupVersionKind → error (nil: allowed; a no-match: not served)
	lookups     *rate.Limiter         // every namespace's
	namespaceOf *turns.ByNamespace    // each namespace's, within lookups
}

func newKindChecker(c client.Client) *kindChecker {
	return &kindChecker{client: c, answers: cache.NewLRUExpireCache(kindAnswers), lookups: rate.NewLimiter(kindLookupsPerSecond, kindLookupBurst),
		namespaceOf: turns.New(kindLookupsPerNamespace, kindLookupNamespaceBurst)}
}

// refusedKind is a check kind the controller will not read.
type refusedKind struct{ reason string }

func (e *refusedKind) Error() string { return e.reason }

// errLookupDeferred: the kind was not looked up, more kinds being asked (by the namespace, or
// by all) than kindChecker looks up a second; it is asked again later, and is not an answer.
var errLookupDeferred = fmt.Errorf("not looked up yet: the controller looks up at most %d new check kinds a second, %g for a namespace", kindLookupsPerSecond, kindLookupsPerNamespace)

// kindAnswered tells whether err, from check, is an answer about the kind (refused, or not
// served), rather than none now (deferred, or the API server did not answer).
func kindAnswered(err error) bool {
	var refused *refusedKind
	return errors.As(err, &refused) || meta.IsNoMatchError(err)
}

// check says why the controller may not read a check kind, or nil. Secrets are refused
// outright (a check could match a tenant's policy on any Secret and report its state). A kind
// the controller may not list and watch everywhere is refused before its informer starts: an
// informer that cannot list never syncs, and the worker waiting for it would hang. A kind the
// API server does not serve is the RESTMapper's no-match error, kept as an answer, so that the
// informer is not asked for it (which would fetch discovery again). errLookupDeferred when it
// was not looked up.
func (k *kindChecker) check(ctx context.Context, gvk schema.GroupVersionKind, namespace string) error {
	if answer, ok := k.answers.Get(gvk); ok {
		err, _ := answer.(error)
		return err
	}
	err := k.ask(ctx, gvk, namespace)
	if err == nil || kindAnswered(err) {
		k.answers.Add(gvk, err, kindAnswerTTL)
	}
	return err
}

// ask looks the kind up in the turn of the namespace whose policy or request names it.
func (k *kindChecker) ask(ctx context.Context, gvk schema.GroupVersionKind, namespace string) error {
	switch {
	case gvk.Group == "" && gvk.Kind == "Secret":
		return &refusedKind{"checks may not read Secrets"}
	case gvk.Group == rbacv1.GroupName:
		// The controller may list RBAC objects (it caches the grants it writes); a check may not
		// read other tenants' grants through it.
		return &refusedKind{"checks may not read RBAC objects"}
	case gvk.Group == "" && (gvk.Kind == "Service" || gvk.Kind == "ConfigMap"):
		// The controller's cache holds of these only its own (the host Services, the templates
		// of the system namespace: driver/controller.go), and a check would read that cache.
		return &refusedKind{"checks may not read " + gvk.Kind + "s: the controller caches only its own"}
	case gvk.Group == v1alpha1.GroupVersion.Group || gvk.Group == "" && gvk.Kind == "Namespace":
		// Cached whole already, as typed objects: a check's informer of them would be a second,
		// cluster-wide copy (every AccessRequest with its policy snapshots, at 5,000 nodes).
		return &refusedKind{"checks may not read " + gvk.Kind + " objects: the controller caches them already"}
	}
	if !k.namespaceOf.AllowWith(namespace, k.lookups) {
		return fmt.Errorf("check kind %s %s: %w", gvk.GroupVersion(), gvk.Kind, errLookupDeferred)
	}
	mapping, err := k.client.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		return err
	}
	if err != nil {
		return fmt.Errorf("check kind %s: %w", gvk.Kind, err)
	}
	resource := mapping.Resource.GroupResource().String()
	for _, verb := range []string{"list", "watch"} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: mapping.Resource.Group, Version: mapping.Resource.Version,
				Resource: mapping.Resource.Resource, Verb: verb}}}
		if err := k.client.Create(ctx, review); err != nil {
			return fmt.Errorf("ask whether the controller may %s %s: %w", verb, resource, err)
		}
		if !review.Status.Allowed {
			return &refusedKind{fmt.Sprintf("the controller may not %s %s in all namespaces; "+
				"give its ClusterRole (deploy/base/rbac.yaml) get, list and watch on it", verb, resource)}
		}
	}
	return nil
}
