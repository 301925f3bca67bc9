package trust

import (
	"bytes"
	"context"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
)

// AnnotationSources on BundleConfigMap lists the Secrets its bundle came from.
const AnnotationSources = "connectors.cpaas.io/ca-cert-secrets"

// ReasonInvalidCACert is the reason of the Warning Event on a labelled Secret (or a
// Connector) whose data holds no certificate.
const ReasonInvalidCACert = "InvalidCACert"

// Collector keeps BundleConfigMap equal to the certificates of the system namespace's Secrets
// labelled LabelCACert=true. It watches only those Secrets (a label selector, one namespace)
// and runs on the elected controller; nodes read the result, not the Secrets.
type Collector struct {
	Kube      kubernetes.Interface
	Namespace string
	// Recorder reports labelled Secrets without a certificate; nil records nothing.
	Recorder events.EventRecorder
	// Resync is how often the ConfigMap is checked again though no Secret changed (a deleted
	// or edited ConfigMap is mended).
	Resync time.Duration
}

// Start collects until ctx is done (a controller-runtime Runnable that needs the Lease).
func (c *Collector) Start(ctx context.Context) error {
	log := klog.FromContext(ctx).WithName("ca-bundle")
	selector := labels.SelectorFromSet(labels.Set{LabelCACert: "true"}).String()
	factory := informers.NewSharedInformerFactoryWithOptions(c.Kube, 0,
		informers.WithNamespace(c.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := factory.Core().V1().Secrets()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, obj any) { poke(obj) }, DeleteFunc: poke,
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	resync := time.NewTicker(max(c.Resync, time.Second))
	defer resync.Stop()
	for {
		secrets, err := inf.Lister().Secrets(c.Namespace).List(labels.Everything())
		if err != nil {
			log.Error(err, "Listing the labelled CA Secrets from the cache")
		} else if err := c.write(ctx, c.collect(secrets)); err != nil && ctx.Err() == nil {
			// The next change or resync tries again.
			log.Error(err, "Writing the global CA bundle", "configMap", c.Namespace+"/"+BundleConfigMap)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-resync.C:
		}
	}
}

// collect builds the ConfigMap's contents from the labelled Secrets, in name order.
func (c *Collector) collect(secrets []*corev1.Secret) *corev1.ConfigMap {
	sort.Slice(secrets, func(i, j int) bool { return secrets[i].Name < secrets[j].Name })
	var pem bytes.Buffer
	var sources []string
	for _, s := range secrets {
		certs, err := CertificatesPEM(s.Data)
		if err != nil {
			if c.Recorder != nil {
				c.Recorder.Eventf(s, nil, corev1.EventTypeWarning, ReasonInvalidCACert, "Collect", "labelled %s=true but %v; not in the global CA bundle", LabelCACert, err)
			}
			continue
		}
		pem.Write(certs)
		sources = append(sources, s.Name)
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMap, Namespace: c.Namespace,
			Annotations: map[string]string{AnnotationSources: strings.Join(sources, ",")}},
		Data: map[string]string{BundleKey: pem.String()},
	}
}

// write stores want when the ConfigMap differs from it.
func (c *Collector) write(ctx context.Context, want *corev1.ConfigMap) error {
	cms := c.Kube.CoreV1().ConfigMaps(c.Namespace)
	got, err := cms.Get(ctx, BundleConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if got.Data[BundleKey] == want.Data[BundleKey] && got.Annotations[AnnotationSources] == want.Annotations[AnnotationSources] && len(got.Data) == 1 {
		return nil
	}
	got.Data = want.Data
	if got.Annotations == nil {
		got.Annotations = map[string]string{}
	}
	got.Annotations[AnnotationSources] = want.Annotations[AnnotationSources]
	_, err = cms.Update(ctx, got, metav1.UpdateOptions{})
	return err
}
