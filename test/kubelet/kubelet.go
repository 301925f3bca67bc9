// Package kubelet is a test stand-in for what kubelet does with an inline CSI volume: it reads
// the CSIDriver object, requests a Pod-bound token for each of its tokenRequests, and calls
// NodePublishVolume / NodeUnpublishVolume over the driver's unix socket with the same volume
// context keys, volume ID, target path, readonly flag and mount group kubelet uses.
package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Kubelet publishes inline CSI volumes of Pods like kubelet does.
type Kubelet struct {
	Kube       kubernetes.Interface
	Node       csi.NodeClient
	DriverName string
	// Root is kubelet's root directory (targets go under Root/pods/<uid>/volumes/...).
	Root string

	conn *grpc.ClientConn
}

// New connects to the driver's socket.
func New(kube kubernetes.Interface, socket, driverName, root string) (*Kubelet, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &Kubelet{Kube: kube, Node: csi.NewNodeClient(conn), DriverName: driverName, Root: root, conn: conn}, nil
}

// Close closes the connection to the driver.
func (k *Kubelet) Close() error { return k.conn.Close() }

// CreatePod creates the Pod's ServiceAccount (envtest runs no ServiceAccount admission or
// controller) when missing, and the Pod.
func (k *Kubelet) CreatePod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	return createPod(ctx, k.Kube, pod)
}

// createPod creates the Pod, its ServiceAccount (default when none is named) and the Node it is
// bound to when they are missing: a real Pod's node registered itself, and the API server puts
// a Pod's node in its tokens only when the Node exists.
func createPod(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod) (*corev1.Pod, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
		pod.Spec.ServiceAccountName = sa
	}
	_, err := kube.CoreV1().ServiceAccounts(pod.Namespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	if node := pod.Spec.NodeName; node != "" {
		if _, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	return kube.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
}

// ProjectedToken returns a token for audience bound to the Pod ns/pod of ServiceAccount sa on
// node, as kubelet projects one (a serviceAccountToken volume), creating the Pod, its
// ServiceAccount and its Node when they are missing.
func ProjectedToken(ctx context.Context, kube kubernetes.Interface, ns, pod, sa, node, audience string) (string, error) {
	p, err := createPod(ctx, kube, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node, Containers: []corev1.Container{{Name: "main", Image: "busybox"}}}})
	if apierrors.IsAlreadyExists(err) {
		p, err = kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	}
	if err != nil {
		return "", err
	}
	res, err := podTokenRequest(ctx, kube, p, audience, nil)
	if err != nil {
		return "", err
	}
	return res.Token, nil
}

// TargetPath is where kubelet asks the driver to mount a Pod's volume.
func (k *Kubelet) TargetPath(pod *corev1.Pod, volume string) string {
	return filepath.Join(k.Root, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", volume, "mount")
}

// VolumeID is kubelet's handle of an inline volume: "csi-" + sha256(podUID + volume name).
func VolumeID(pod *corev1.Pod, volume string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(string(pod.UID)+volume)))
}

// PublishRequest builds the NodePublishVolume request kubelet would send now (with fresh
// tokens) for the Pod's inline CSI volume.
func (k *Kubelet) PublishRequest(ctx context.Context, pod *corev1.Pod, volume string) (*csi.NodePublishVolumeRequest, error) {
	src, err := csiSource(pod, volume)
	if err != nil {
		return nil, err
	}
	drv, err := k.Kube.StorageV1().CSIDrivers().Get(ctx, k.DriverName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("CSIDriver %s: %w", k.DriverName, err)
	}
	vc := map[string]string{}
	for key, v := range src.VolumeAttributes {
		vc[key] = v
	}
	if drv.Spec.PodInfoOnMount != nil && *drv.Spec.PodInfoOnMount {
		vc["csi.storage.k8s.io/pod.name"] = pod.Name
		vc["csi.storage.k8s.io/pod.namespace"] = pod.Namespace
		vc["csi.storage.k8s.io/pod.uid"] = string(pod.UID)
		vc["csi.storage.k8s.io/serviceAccount.name"] = pod.Spec.ServiceAccountName
		vc["csi.storage.k8s.io/ephemeral"] = "true"
	}
	var secrets map[string]string
	if len(drv.Spec.TokenRequests) > 0 {
		tokens, err := k.tokens(ctx, pod, drv.Spec.TokenRequests)
		if err != nil {
			return nil, err
		}
		if drv.Spec.ServiceAccountTokenInSecrets != nil && *drv.Spec.ServiceAccountTokenInSecrets {
			secrets = map[string]string{"csi.storage.k8s.io/serviceAccount.tokens": tokens}
		} else {
			vc["csi.storage.k8s.io/serviceAccount.tokens"] = tokens
		}
	}
	mnt := &csi.VolumeCapability_MountVolume{}
	if src.FSType != nil {
		mnt.FsType = *src.FSType
	}
	if sc := pod.Spec.SecurityContext; sc != nil && sc.FSGroup != nil &&
		drv.Spec.FSGroupPolicy != nil && *drv.Spec.FSGroupPolicy == storagev1.FileFSGroupPolicy {
		mnt.VolumeMountGroup = strconv.FormatInt(*sc.FSGroup, 10)
	}
	target := k.TargetPath(pod, volume)
	// kubelet creates the target's parent; the driver creates the target itself.
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return nil, err
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:   VolumeID(pod, volume),
		TargetPath: target,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: mnt},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		Readonly:      src.ReadOnly != nil && *src.ReadOnly,
		VolumeContext: vc,
		Secrets:       secrets,
	}, nil
}

// Publish publishes (or republishes) a Pod's inline CSI volume.
func (k *Kubelet) Publish(ctx context.Context, pod *corev1.Pod, volume string) error {
	req, err := k.PublishRequest(ctx, pod, volume)
	if err != nil {
		return err
	}
	_, err = k.Node.NodePublishVolume(ctx, req)
	return err
}

// Unpublish unpublishes a Pod's inline CSI volume.
func (k *Kubelet) Unpublish(ctx context.Context, pod *corev1.Pod, volume string) error {
	_, err := k.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{
		VolumeId:   VolumeID(pod, volume),
		TargetPath: k.TargetPath(pod, volume),
	})
	return err
}

func csiSource(pod *corev1.Pod, volume string) (*corev1.CSIVolumeSource, error) {
	for _, v := range pod.Spec.Volumes {
		if v.Name == volume && v.CSI != nil {
			return v.CSI, nil
		}
	}
	return nil, fmt.Errorf("pod %s/%s has no csi volume %q", pod.Namespace, pod.Name, volume)
}

// tokens requests a Pod-bound token per tokenRequest and encodes them as kubelet does:
// {"<audience>": {"token": ..., "expirationTimestamp": ...}}.
func (k *Kubelet) tokens(ctx context.Context, pod *corev1.Pod, reqs []storagev1.TokenRequest) (string, error) {
	out := map[string]authenticationv1.TokenRequestStatus{}
	for _, r := range reqs {
		res, err := podTokenRequest(ctx, k.Kube, pod, r.Audience, r.ExpirationSeconds)
		if err != nil {
			return "", err
		}
		out[r.Audience] = *res
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// podTokenRequest requests a token for audience bound to pod.
func podTokenRequest(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod, audience string, expirationSeconds *int64) (*authenticationv1.TokenRequestStatus, error) {
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{audience},
		ExpirationSeconds: expirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID},
	}}
	res, err := kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, tr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("TokenRequest for %s/%s audience %q: %w", pod.Namespace, pod.Spec.ServiceAccountName, audience, err)
	}
	return &res.Status, nil
}

// WaitUntil polls cond until it is true or the timeout passes; for tests that wait on
// asynchronous state, never to assert timing.
func WaitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond()
}
