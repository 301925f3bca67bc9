package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
)

// waitClassCondition waits until the class's condition has the status and reason.
func waitClassCondition(t *testing.T, name, typ string, status metav1.ConditionStatus, reason string) *v1alpha1.ConnectorClass {
	t.Helper()
	return waitObjectCondition(t, &v1alpha1.ConnectorClass{ObjectMeta: metav1.ObjectMeta{Name: name}},
		func(c *v1alpha1.ConnectorClass) []metav1.Condition { return c.Status.Conditions }, typ, status, reason)
}

// serviceBackends are where the tests' Services lead, by "<namespace>/<name>": the API
// server refuses loopback endpoints in an EndpointSlice, so the test keeps the mapping that
// cluster DNS and kube-proxy would give a Pod.
var serviceBackends sync.Map

// serviceTo creates a Service with one port whose traffic goes to addr (host:port).
func serviceTo(t *testing.T, ns, name string, port int32, addr string) {
	t.Helper()
	if _, err := cp.Kube.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: port}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	serviceBackends.Store(ns+"/"+name, addr)
	t.Cleanup(func() { serviceBackends.Delete(ns + "/" + name) })
}

// clusterDial dials a Service's cluster name where the Service leads (see serviceBackends).
// Test clients use it to reach what a Pod would; any other name fails.
func clusterDial(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(host, ".")
	if len(parts) < 3 || parts[2] != "svc" {
		return nil, fmt.Errorf("test: %s is not a Service's cluster name", host)
	}
	backend, ok := serviceBackends.Load(parts[1] + "/" + parts[0])
	if !ok {
		return nil, fmt.Errorf("test: Service %s/%s leads nowhere", parts[1], parts[0])
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", backend.(string))
}

// TestClassesWithTheirOwnProxyAndAPI: the controller resolves a class's spec.proxy and
// spec.api (a Service reference with a relative URI, an absolute URI) into status addresses
// with ProxyReady, APIReady and Ready; a reference to the built-in proxy's Service (Alauda's
// name for it too) is the built-in proxy; a missing Service or another kind is refused with a
// reason. Connectors of a class with its own proxy get its address (host resolver, Alauda's
// default; path with the annotation), and their volume's http.proxy leads to that proxy: a
// request sent with the rendered file reaches the test's own proxy behind the Service, with
// the Pod's token.
func TestClassesWithTheirOwnProxyAndAPI(t *testing.T) {
	env := startDeployedDrivers(t, nil)
	ns := newNamespace(t)
	custom := startRecorder(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	serviceTo(t, ns, "own-proxy", 8080, strings.TrimPrefix(custom.URL, "http://"))
	ref := func(name string) *v1alpha1.Reference {
		return &v1alpha1.Reference{Kind: "Service", Name: name, Namespace: ns}
	}

	own := classWith(t, "own", func(c *v1alpha1.ConnectorClass) {
		c.Spec.LivenessProbe = nil
		c.Spec.Proxy = &v1alpha1.ProxySpec{Destination: v1alpha1.Destination{Ref: ref("own-proxy"), URI: "/p"}}
		c.Spec.API = &v1alpha1.APISpec{Destination: v1alpha1.Destination{URI: "http://127.0.0.1:9/api"}}
	})
	byPath := classWith(t, "by-path", func(c *v1alpha1.ConnectorClass) {
		c.Annotations = map[string]string{v1alpha1.AnnotationProxyResolver: "path"}
		c.Spec.LivenessProbe = nil
		c.Spec.Proxy = &v1alpha1.ProxySpec{Destination: v1alpha1.Destination{Ref: ref("own-proxy")}}
	})
	missing := classWith(t, "missing", func(c *v1alpha1.ConnectorClass) {
		c.Spec.LivenessProbe = nil
		c.Spec.Proxy = &v1alpha1.ProxySpec{Destination: v1alpha1.Destination{Ref: ref("no-such-service")}}
	})
	builtIn := classWith(t, "alauda-builtin", func(c *v1alpha1.ConnectorClass) {
		c.Spec.LivenessProbe = nil
		c.Spec.Proxy = &v1alpha1.ProxySpec{Destination: v1alpha1.Destination{Ref: &v1alpha1.Reference{Kind: "Service", Name: "connectors-proxy-service", Namespace: systemNS}}}
	})
	wrongKind := classWith(t, "wrong-kind", func(c *v1alpha1.ConnectorClass) {
		c.Spec.LivenessProbe = nil
		c.Spec.API = &v1alpha1.APISpec{Destination: v1alpha1.Destination{Ref: &v1alpha1.Reference{Kind: "Deployment", APIVersion: "apps/v1", Name: "api", Namespace: ns}}}
	})

	wantProxy := fmt.Sprintf("http://own-proxy.%s.svc.cluster.local:8080", ns)
	c := waitClassCondition(t, own, v1alpha1.ConditionReady, metav1.ConditionTrue, "Ready")
	if c.Status.Proxy == nil || c.Status.Proxy.HTTPAddress.URL != wantProxy+"/p" {
		t.Errorf("status.proxy = %+v, want %s/p", c.Status.Proxy, wantProxy)
	}
	if c.Status.API == nil || c.Status.API.Address.URL != "http://127.0.0.1:9/api" {
		t.Errorf("status.api = %+v", c.Status.API)
	}
	waitClassCondition(t, missing, v1alpha1.ConditionProxyReady, metav1.ConditionFalse, connectorstatus.ReasonServiceMissing)
	waitClassCondition(t, builtIn, v1alpha1.ConditionProxyReady, metav1.ConditionTrue, v1alpha1.ReasonBuiltIn)
	waitClassCondition(t, wrongKind, v1alpha1.ConditionAPIReady, metav1.ConditionFalse, connectorstatus.ReasonUnsupportedRef)
	waitClassCondition(t, wrongKind, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ConditionAPIReady+"Failed")
	waitClassCondition(t, byPath, v1alpha1.ConditionProxyReady, metav1.ConditionTrue, v1alpha1.ReasonResolved)
	out, err := cp.Kubectl(nil, "get", "connectorclass", missing)
	if err != nil || !strings.Contains(out, "REASON") || !strings.Contains(out, "ProxyReadyFailed") {
		t.Errorf("kubectl get connectorclass does not show why it is not ready (%v):\n%s", err, out)
	}

	newConnector(t, ns, "own", own, "https://127.0.0.1:9")
	newConnector(t, ns, "by-path", byPath, "https://127.0.0.1:9")
	newConnector(t, ns, "missing", missing, "https://127.0.0.1:9")
	newConnector(t, ns, "builtin", builtIn, "https://127.0.0.1:9")
	for name, want := range map[string]string{
		"own":     wantProxy + "/p",
		"by-path": wantProxy + "/namespaces/" + ns + "/connectors/by-path",
		"builtin": env.proxyURL + "/namespaces/" + ns + "/connectors/builtin",
	} {
		got := waitCondition(t, ns, name, v1alpha1.ConditionProxyServiceReady, metav1.ConditionTrue, map[bool]string{true: v1alpha1.ReasonBuiltIn, false: "External"}[name == "builtin"])
		if got.Status.Proxy == nil || got.Status.Proxy.HTTPAddress.URL != want {
			t.Errorf("Connector %s: status.proxy = %+v, want %s", name, got.Status.Proxy, want)
		}
	}
	waitCondition(t, ns, "missing", v1alpha1.ConditionProxyServiceReady, metav1.ConditionFalse, "ProxyNotReady")

	allowConnectors(t, ns, "builder", "own")
	pod, token := publishedToken(t, env, ns, "uses-own", "own")
	files := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))
	if files["connector.status.proxyAddress"] != wantProxy+"/p" {
		t.Errorf("connector.status.proxyAddress = %q, want the class's proxy", files["connector.status.proxyAddress"])
	}
	forward, err := url.Parse(files["http.proxy"])
	if err != nil || forward.Host != strings.TrimPrefix(wantProxy, "http://") {
		t.Fatalf("http.proxy %q does not lead to the class's proxy (%v)", files["http.proxy"], err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(forward), DialContext: clusterDial}}
	res, err := client.Get("http://tool.example.test/repo")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	seen := custom.requests()
	if len(seen) != 1 || seen[0].RequestURI != "http://tool.example.test/repo" {
		t.Fatalf("the class's proxy saw %+v, want the forwarded request", seen)
	}
	if res.StatusCode != http.StatusNoContent {
		t.Errorf("status %d through the class's proxy", res.StatusCode)
	}
	user, pass, ok := (&http.Request{Header: http.Header{"Authorization": {seen[0].ProxyAuthorization}}}).BasicAuth()
	if !ok || pass != token || user != ns+"/own" {
		t.Errorf("the class's proxy got Proxy-Authorization for %q (ok %v), want the Connector with the Pod's token", user, ok)
	}
}
