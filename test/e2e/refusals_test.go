package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/driver"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/test/kubelet"
)

// noRedirects is an HTTP client that reports redirects instead of following them.
var noRedirects = &http.Client{
	Timeout:       20 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// do sends a request and returns status and body.
func do(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func newRequest(t *testing.T, method, url string, header map[string]string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return req
}

// forwardClient is an HTTP client using the proxy as a forward proxy for the named Connectors.
func forwardClient(proxyURL, connectors, token string) *http.Client {
	u, _ := url.Parse(proxyURL)
	u.User = url.UserPassword(connectors, token)
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u)},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// connectStatus sends a raw CONNECT and returns the status line.
func connectStatus(t *testing.T, proxyAddr, dest, connectors, token string) string {
	t.Helper()
	conn, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n", dest, dest, basic(connectors, token))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

// setFlags writes the connectors-config ConfigMap and waits until the driver has seen it
// (a request that depends on it answers as expected).
func setFlags(t testing.TB, data map[string]string) {
	t.Helper()
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: features.ConfigMapName, Namespace: systemNS}, Data: data}
	_, err := cp.Kube.CoreV1().ConfigMaps(systemNS).Update(ctx, cm, metav1.UpdateOptions{})
	if err != nil {
		_, err = cp.Kube.CoreV1().ConfigMaps(systemNS).Create(ctx, cm, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestProxyRefusalsAndHostileRequests(t *testing.T) {
	tool, other := startGitServer(t, false), startGitServer(t, false)
	env := startProxyDriver(t, nil)
	ctx := context.Background()
	ns := newNamespace(t)
	git := gitClass(t)
	gitConnector(t, ns, "tool", git, tool)
	gitConnector(t, ns, "forbidden", git, other)
	allowConnectors(t, ns, "builder", "tool", "missing") // may get a Connector that does not exist: 404, not 403
	pod := podWithVolume(t, env.kubelet, ns, "client", map[string]string{"connectors": "tool"}, nil)
	if err := env.kubelet.Publish(ctx, pod, "connectors"); err != nil {
		t.Fatal(err)
	}
	token := visibleFiles(t, env.kubelet.TargetPath(pod, "connectors"))["context.token"]
	reverse := func(name, path string) string {
		return fmt.Sprintf("%s/namespaces/%s/connectors/%s%s", env.proxyURL, ns, name, path)
	}
	refs := "/repo.git/info/refs?service=git-upload-pack"
	bearer := map[string]string{"Authorization": "Bearer " + token}

	otherAudience, err := cp.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "builder", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"not-connectors"},
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("reverse proxy allows the Pod token", func(t *testing.T) {
		if code, body := do(t, noRedirects, newRequest(t, "GET", reverse("tool", refs), bearer)); code != http.StatusOK {
			t.Fatalf("status %d: %s", code, body)
		}
		if code, _ := do(t, noRedirects, newRequest(t, "GET", reverse("tool", refs),
			map[string]string{"Authorization": "Basic " + basic("anyone", token)})); code != http.StatusOK {
			t.Fatalf("basic auth with the token as password: status %d", code)
		}
	})
	refusals := []struct {
		name   string
		req    *http.Request
		status int
		body   string
	}{
		{"no token", newRequest(t, "GET", reverse("tool", refs), nil), 401, "no token"},
		{"bad token", newRequest(t, "GET", reverse("tool", refs), map[string]string{"Authorization": "Bearer not-a-token"}), 401, "token not accepted"},
		{"wrong audience", newRequest(t, "GET", reverse("tool", refs), map[string]string{"Authorization": "Bearer " + otherAudience.Status.Token}), 401, "token not accepted"},
		{"no get on the Connector", newRequest(t, "GET", reverse("forbidden", refs), bearer), 403, "may not get Connector " + ns + "/forbidden"},
		{"unknown Connector", newRequest(t, "GET", reverse("missing", refs), bearer), 404, "not found"},
		{"bad path", newRequest(t, "GET", env.proxyURL+"/namespaces/"+ns+"/tools/x", bearer), 404, "/namespaces/<namespace>/connectors/<name>"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, noRedirects, tc.req)
			if code != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("status %d body %q, want %d with %q", code, body, tc.status, tc.body)
			}
		})
	}
	t.Run("forward proxy refuses hosts of no named Connector", func(t *testing.T) {
		c := forwardClient(env.proxyURL, ns+"/tool", token)
		if code, body := do(t, c, newRequest(t, "GET", tool.URL+refs, nil)); code != http.StatusOK {
			t.Fatalf("own host: status %d %s", code, body)
		}
		code, body := do(t, c, newRequest(t, "GET", other.URL+refs, nil))
		if code != http.StatusForbidden || !strings.Contains(body, "not an address of the named Connectors") {
			t.Fatalf("open-proxy attempt: status %d %q", code, body)
		}
		proxyAddr := strings.TrimPrefix(env.proxyURL, "http://")
		if line := connectStatus(t, proxyAddr, "127.0.0.2:9", ns+"/tool", token); !strings.Contains(line, "403") {
			t.Fatalf("CONNECT to a non-Connector host: %q", line)
		}
		if line := connectStatus(t, proxyAddr, strings.TrimPrefix(tool.URL, "http://"), ns+"/tool", "bad"); !strings.Contains(line, "407") {
			t.Fatalf("CONNECT with a bad token: %q", line)
		}
	})
	t.Run("hostile headers never reach the tool", func(t *testing.T) {
		before := len(tool.Requests())
		smuggle := newRequest(t, "GET", reverse("tool", refs), map[string]string{
			"Authorization": "Bearer " + token, "Connection": "Authorization, Proxy-Authorization",
			"Proxy-Authorization": "Basic " + basic("x", "y"), "Proxy-Connection": "keep-alive",
		})
		if code, body := do(t, noRedirects, smuggle); code != http.StatusOK {
			t.Fatalf("status %d %s", code, body)
		}
		fc := forwardClient(env.proxyURL, ns+"/tool", token)
		if code, body := do(t, fc, newRequest(t, "GET", tool.URL+refs, map[string]string{
			"Authorization": "Basic " + basic("evil", "evil"), "Connection": "Authorization"})); code != http.StatusOK {
			t.Fatalf("forward: status %d %s", code, body)
		}
		for _, r := range proxiedRequests(tool, before) {
			if r.Authorization != "Basic "+basic(tool.Username, tool.Password) || r.ProxyAuthorization != "" {
				t.Errorf("the tool saw Authorization %q and Proxy-Authorization %q", r.Authorization, r.ProxyAuthorization)
			}
		}
	})
	t.Run("content negotiation passes through unchanged", func(t *testing.T) {
		// Clients that ask for no encoding; the proxy must not ask for gzip on their behalf
		// (it would decode the answer and drop its Content-Length).
		plain := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableCompression: true}}
		fc := forwardClient(env.proxyURL, ns+"/tool", token)
		fc.Transport.(*http.Transport).DisableCompression = true
		before := len(tool.Requests())
		if code, body := do(t, plain, newRequest(t, "GET", reverse("tool", refs), bearer)); code != http.StatusOK {
			t.Fatalf("reverse: status %d %s", code, body)
		}
		if code, body := do(t, fc, newRequest(t, "GET", tool.URL+refs, nil)); code != http.StatusOK {
			t.Fatalf("forward: status %d %s", code, body)
		}
		if code, body := do(t, plain, newRequest(t, "GET", reverse("tool", refs), map[string]string{
			"Authorization": "Bearer " + token, "Accept-Encoding": "identity"})); code != http.StatusOK {
			t.Fatalf("reverse with identity: status %d %s", code, body)
		}
		var seen []string
		for _, r := range proxiedRequests(tool, before) {
			seen = append(seen, r.Header.Get("Accept-Encoding"))
		}
		if want := []string{"", "", "identity"}; !slices.Equal(seen, want) {
			t.Fatalf("the tool saw Accept-Encoding %q, want %q (what the clients sent)", seen, want)
		}
	})
	t.Run("no credential follows a redirect to another host", func(t *testing.T) {
		before := len(other.Requests())
		elsewhere := other.URL + "/stolen"
		code, _ := do(t, noRedirects, newRequest(t, "GET", reverse("tool", "/redirect?to="+url.QueryEscape(elsewhere)), bearer))
		if code != http.StatusFound {
			t.Fatalf("status %d, want the tool's 302 passed through", code)
		}
		fc := forwardClient(env.proxyURL, ns+"/tool", token)
		res, err := fc.Get(tool.URL + "/redirect?to=" + url.QueryEscape(elsewhere))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if code, _ := do(t, fc, newRequest(t, "GET", res.Header.Get("Location"), nil)); code != http.StatusForbidden {
			t.Fatalf("following the redirect through the proxy: status %d, want 403", code)
		}
		// The status controller's probes of the forbidden Connector (at other) may come any time.
		if got := proxiedRequests(other, before); len(got) != 0 {
			t.Fatalf("the other host received %d requests: %+v", len(got), got)
		}
	})
	t.Run("bearer-token credentials are injected", func(t *testing.T) {
		createSecret(t, ns, "bearer", v1alpha1.SecretTypeBearerToken, map[string]string{"token": "tool-api-token"})
		bearerClass := newClass(t, "bearer")
		updateClass(t, bearerClass, func(c *v1alpha1.ConnectorClass) {
			c.Spec.Auth = &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "token", SecretType: v1alpha1.SecretTypeBearerToken}}}
		})
		create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: bearerClass, Address: tool.URL,
				Auth: &v1alpha1.ConnectorAuth{Name: "token", SecretRef: &v1alpha1.SecretRef{Name: "bearer"}}}})
		allowConnectors(t, ns, "api-user", "api")
		apiToken := proxyToken(t, ns, "api-user")
		before := len(tool.Requests())
		ok := kubelet.WaitUntil(10*time.Second, func() bool {
			code, _ := do(t, noRedirects, newRequest(t, "GET", reverse("api", "/anything"),
				map[string]string{"Authorization": "Bearer " + apiToken}))
			return code == http.StatusUnauthorized // the git server wants basic auth; what matters is what it saw
		})
		if !ok {
			t.Fatal("the bearer Connector was not proxied")
		}
		seen := tool.Requests()[before:]
		if len(seen) == 0 || seen[len(seen)-1].Authorization != "Bearer tool-api-token" {
			t.Fatalf("the tool saw %+v, want the Connector's bearer token", seen)
		}
	})
	t.Run("connectors/proxy permission when the flag is on", func(t *testing.T) {
		setFlags(t, map[string]string{"enable-connector-proxy-permissions": "true"})
		t.Cleanup(func() { setFlags(t, map[string]string{}) })
		refused := func() bool {
			code, body := do(t, noRedirects, newRequest(t, "GET", reverse("tool", refs), bearer))
			return code == http.StatusForbidden && strings.Contains(body, "connectors/proxy")
		}
		if !kubelet.WaitUntil(10*time.Second, refused) {
			t.Fatal("without connectors/proxy the request was not refused")
		}
		grantPodProxy(t, ns, pod.Name, "tool")
		allowed := func() bool {
			code, _ := do(t, noRedirects, newRequest(t, "GET", reverse("tool", refs), bearer))
			return code == http.StatusOK
		}
		if !kubelet.WaitUntil(15*time.Second, allowed) {
			t.Fatal("a Pod-scoped connectors/proxy grant did not let the Pod's token through")
		}
	})
	t.Run("token of a deleted Pod", func(t *testing.T) {
		if err := env.kubelet.Unpublish(ctx, pod, "connectors"); err != nil {
			t.Fatal(err)
		}
		if err := cp.Kube.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		refused := func() bool {
			code, _ := do(t, noRedirects, newRequest(t, "GET", reverse("tool", refs), bearer))
			return code == http.StatusUnauthorized
		}
		if !kubelet.WaitUntil(15*time.Second, refused) {
			t.Fatal("the token of a deleted Pod is still accepted")
		}
	})
	if strings.Contains(logs.String(), token) || strings.Contains(logs.String(), tool.Password) {
		t.Error("the driver log holds the Pod token or the tool's password")
	}
}

// grantPodProxy grants connectors/proxy on a Connector scoped to one Pod, as the built-in
// connectors-use-connectors-proxy-in-pod template does.
func grantPodProxy(t *testing.T, ns, pod, connector string) {
	t.Helper()
	name := "proxy-" + pod
	create(t, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectors/proxy/v1/pod/" + ns + "/" + pod},
		ResourceNames: []string{connector}, Verbs: []string{"*"},
	}}})
	create(t, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "builder", Namespace: ns}}})
}

// TestProxyRefusalsAreEventsOnThePod: a 403 of the proxy to a Pod's request is a Warning Event
// (ProxyRefused) on that Pod, found with one kubectl command by the Pod's name; the same refusal
// again within --proxy-refusal-event-interval adds nothing; a request without a valid Pod token
// (401/407) names no Pod and makes no Event; no Event carries the token.
func TestProxyRefusalsAreEventsOnThePod(t *testing.T) {
	tool, other := startGitServer(t, false), startGitServer(t, false)
	env := startProxyDriver(t, func(o *driver.Options) { o.RefusalEventQPS = 1 }) // the flag's default
	ctx := context.Background()
	ns := newNamespace(t)
	git := gitClass(t)
	gitConnector(t, ns, "tool", git, tool)
	gitConnector(t, ns, "forbidden", git, other)
	allowConnectors(t, ns, "builder", "tool")
	pod, token := publishedToken(t, env, ns, "refused", "tool")
	refs := "/repo.git/info/refs?service=git-upload-pack"
	forbidden := newRequest(t, "GET", fmt.Sprintf("%s/namespaces/%s/connectors/forbidden%s", env.proxyURL, ns, refs),
		map[string]string{"Authorization": "Bearer " + token})
	refusalEvents := func() []corev1.Event {
		evs, err := cp.Kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Pod,involvedObject.name=" + pod.Name + ",reason=ProxyRefused"})
		if err != nil {
			t.Fatal(err)
		}
		return evs.Items
	}
	withMessage := func(part string) func() bool {
		return func() bool {
			return slices.ContainsFunc(refusalEvents(), func(ev corev1.Event) bool { return strings.Contains(ev.Message, part) })
		}
	}

	if code, body := do(t, noRedirects, forbidden); code != http.StatusForbidden {
		t.Fatalf("status %d: %s", code, body)
	}
	reverseRefusal := "connectors proxy answered 403 to GET (reverse): system:serviceaccount:" + ns + ":builder may not get Connector " + ns + "/forbidden"
	if !kubelet.WaitUntil(20*time.Second, withMessage(reverseRefusal)) {
		t.Fatalf("no ProxyRefused Event %q on the Pod: %+v", reverseRefusal, refusalEvents())
	}
	// The same refusal again, and refusals that name no Pod (bad tokens).
	for range 5 {
		do(t, noRedirects, forbidden)
	}
	for _, bad := range []string{"not-a-token", ""} {
		if code, _ := do(t, noRedirects, newRequest(t, "GET", fmt.Sprintf("%s/namespaces/%s/connectors/tool%s", env.proxyURL, ns, refs),
			map[string]string{"Authorization": "Bearer " + bad})); code != http.StatusUnauthorized {
			t.Fatalf("bad token: status %d", code)
		}
	}
	if code, _ := do(t, forwardClient(env.proxyURL, ns+"/tool", "not-a-token"), newRequest(t, "GET", tool.URL+refs, nil)); code != http.StatusProxyAuthRequired {
		t.Fatalf("forward, bad token: status %d", code)
	}
	// A different refusal (forward, a host of no named Connector) is recorded; the Event sink
	// writes in order, so once it is there the repeats above were handled too.
	if code, _ := do(t, forwardClient(env.proxyURL, ns+"/tool", token), newRequest(t, "GET", other.URL+refs, nil)); code != http.StatusForbidden {
		t.Fatalf("forward to another host: status %d", code)
	}
	if !kubelet.WaitUntil(20*time.Second, withMessage("to GET (passthrough): destination "+strings.TrimPrefix(other.URL, "http://")+" is not an address of the named Connectors")) {
		t.Fatalf("no ProxyRefused Event for the forward refusal: %+v", refusalEvents())
	}
	evs := refusalEvents()
	if len(evs) != 2 {
		t.Errorf("%d ProxyRefused Events, want 2 (one per refusal): %+v", len(evs), evs)
	}
	for _, ev := range evs {
		if ev.Type != corev1.EventTypeWarning || ev.Count > 1 || ev.InvolvedObject.UID != pod.UID {
			t.Errorf("Event %s: type %s, count %d, UID %s; want one Warning on Pod UID %s", ev.Name, ev.Type, ev.Count, ev.InvolvedObject.UID, pod.UID)
		}
	}
	all, err := cp.Kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range all.Items {
		if strings.Contains(ev.Message, token) {
			t.Errorf("Event %s carries the Pod's token", ev.Name)
		}
	}
	// What an operator types: the Pod's name, one command.
	out, err := cp.Kubectl(nil, "get", "events", "-n", ns, "--field-selector", "involvedObject.name="+pod.Name)
	if err != nil || !strings.Contains(out, "ProxyRefused") || !strings.Contains(out, "may not get Connector "+ns+"/forbidden") {
		t.Errorf("kubectl get events by the Pod's name: %v\n%s", err, out)
	}
	t.Logf("kubectl get events -n %s --field-selector involvedObject.name=%s\n%s", ns, pod.Name, out)
}
