package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
	"github.com/kube-connectors/connectors-csi/connectorstatus"
)

// sonarLike answers as a tool whose health and token checks are in the body: status UP or
// DOWN, and valid only for the token "good-token".
func sonarLike(status string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/system/status":
			_ = json.NewEncoder(w).Encode(map[string]string{"status": status})
		case "/moved":
			http.Redirect(w, r, "/api/system/status", http.StatusFound)
		case "/team/app/info/refs", "/api/authentication/validate":
			_ = json.NewEncoder(w).Encode(map[string]bool{"valid": r.Header.Get("Authorization") == "Bearer good-token"})
		default:
			http.NotFound(w, r)
		}
	}
}

// TestProbesAsAlaudaDocumentsThem drives the status controller's probes through real tools:
// response.cel over the status, headers and JSON body (Alauda's documented names and its
// design notes' short ones); templates over .Connector (auth params as .Value.StringVal) and
// .Secret.StringData; the path on the tool's host (the address's path left out); host and
// disableRedirect; Alauda's reasons (NonLivenessProbe, NonAuthProbe, SecretOptional); probes
// through the class API (X-Plugin-* headers, 2xx passes, 401 rejects) or APINotResolved; a template that fails names the field, not the Secret.
func TestProbesAsAlaudaDocumentsThem(t *testing.T) {
	startDeployedDrivers(t, nil)
	ns := newNamespace(t)
	up := startRecorder(t, sonarLike("UP"))
	down := startRecorder(t, sonarLike("DOWN"))
	other := startRecorder(t, sonarLike("UP"))
	createSecret(t, ns, "good", v1alpha1.SecretTypeBearerToken, map[string]string{"token": "good-token"})
	createSecret(t, ns, "bad", v1alpha1.SecretTypeBearerToken, map[string]string{"token": "bad-token-5150"})

	sonar := classWith(t, "sonar", func(c *v1alpha1.ConnectorClass) {
		c.Spec.Auth = &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "tokenAuth", SecretType: v1alpha1.SecretTypeBearerToken}}}
		c.Spec.LivenessProbe = &v1alpha1.Probe{HTTP: &v1alpha1.HTTPProbe{Path: "/api/system/status",
			Response: &v1alpha1.ProbeResponse{CEL: `response.statusCode == 200 && response.body.status == "UP"`}}}
		c.Spec.AuthProbes = []v1alpha1.AuthProbe{{AuthName: "tokenAuth",
			Params: []v1alpha1.ParamSpec{{Name: "repository", Type: v1alpha1.ParamTypeString}},
			Probe: v1alpha1.Probe{HTTP: &v1alpha1.HTTPProbe{
				Path: `/{{- range .Connector.Spec.Auth.Params }}{{ if eq .Name "repository" }}{{ .Value.StringVal }}{{ end }}{{ end }}/info/refs?service=git-upload-pack`,
				HTTPHeaders: []v1alpha1.HTTPHeader{{Name: "Authorization",
					Value: `{{- if .Secret }}Bearer {{ .Secret.StringData.token }}{{- end }}`}},
				Response: &v1alpha1.ProbeResponse{CEL: `statusCode == 200 && bodyJSON.valid == true`}}}}}
	})
	withToken := func(name, address, secret string) {
		create(t, &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ConnectorSpec{ConnectorClassName: sonar, Address: address,
				Auth: &v1alpha1.ConnectorAuth{Name: "tokenAuth", SecretRef: &v1alpha1.SecretRef{Name: secret},
					Params: []v1alpha1.Param{{Name: "repository", Value: apiextensionsv1.JSON{Raw: []byte(`"team/app"`)}}}}}})
	}
	withToken("up", up.URL+"/some/prefix", "good")
	withToken("down", down.URL, "good")
	withToken("bad-token", up.URL, "bad")

	t.Run("response.cel over the JSON body and templates", func(t *testing.T) {
		waitCondition(t, ns, "up", v1alpha1.ConditionLivenessReady, metav1.ConditionTrue, "Reachable")
		waitCondition(t, ns, "up", v1alpha1.ConditionAuthReady, metav1.ConditionTrue, "Accepted")
		waitCondition(t, ns, "down", v1alpha1.ConditionLivenessReady, metav1.ConditionFalse, "UnexpectedResponse")
		c := waitCondition(t, ns, "bad-token", v1alpha1.ConditionAuthReady, metav1.ConditionFalse, "Rejected")
		assertNoSecretInStatus(t, c, "bad-token-5150")
		var sawPath, sawPrefix bool
		for _, r := range up.requests() {
			sawPath = sawPath || r.RequestURI == "/team/app/info/refs?service=git-upload-pack"
			sawPrefix = sawPrefix || strings.HasPrefix(r.RequestURI, "/some/prefix")
		}
		if !sawPath || sawPrefix {
			t.Errorf("the auth probe's rendered path on the tool's host was not requested alone (path seen %v, prefix seen %v): %+v", sawPath, sawPrefix, up.requests())
		}
	})

	// A tool that accepts connections and never answers holds a worker for a probe's timeout:
	// once, not once more for the auth probe.
	t.Run("a tool that never answers gets no auth probe", func(t *testing.T) {
		silent, seen := silentTool(t)
		withToken("silent", silent, "good")
		waitCondition(t, ns, "silent", v1alpha1.ConditionLivenessReady, metav1.ConditionFalse, "Unreachable")
		c := waitCondition(t, ns, "silent", v1alpha1.ConditionAuthReady, metav1.ConditionFalse, "Unreachable")
		if cond := meta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionAuthReady); !strings.Contains(cond.Message, "not probed") {
			t.Errorf("AuthReady message %q", cond.Message)
		}
		for _, line := range seen() {
			if strings.Contains(line, "info/refs") {
				t.Errorf("the auth probe was sent to a tool that never answered: %q", line)
			}
		}
	})

	t.Run("host and redirects", func(t *testing.T) {
		redirect := func(disable bool) string {
			return classWith(t, "redirect", func(c *v1alpha1.ConnectorClass) {
				c.Spec.AuthProbes = nil
				c.Spec.LivenessProbe = &v1alpha1.Probe{HTTP: &v1alpha1.HTTPProbe{Path: "/moved", Host: strings.TrimPrefix(other.URL, "http://"), DisableRedirect: disable}}
			})
		}
		newConnector(t, ns, "follows", redirect(false), up.URL)
		newConnector(t, ns, "stops", redirect(true), up.URL)
		waitCondition(t, ns, "follows", v1alpha1.ConditionLivenessReady, metav1.ConditionTrue, "Reachable")
		waitCondition(t, ns, "stops", v1alpha1.ConditionLivenessReady, metav1.ConditionFalse, "UnexpectedResponse")
		for _, r := range up.requests() {
			if r.RequestURI == "/moved" {
				t.Errorf("a probe with host set went to the Connector's address: %+v", r)
			}
		}
	})

	t.Run("Alauda's reasons", func(t *testing.T) {
		bare := classWith(t, "bare", func(c *v1alpha1.ConnectorClass) { c.Spec.LivenessProbe, c.Spec.AuthProbes = nil, nil })
		newConnector(t, ns, "bare", bare, up.URL)
		waitCondition(t, ns, "bare", v1alpha1.ConditionLivenessReady, metav1.ConditionTrue, connectorstatus.ReasonNonLivenessProbe)
		waitCondition(t, ns, "bare", v1alpha1.ConditionAuthReady, metav1.ConditionTrue, connectorstatus.ReasonNonAuthProbe)
		waitCondition(t, ns, "bare", v1alpha1.ConditionSecretReady, metav1.ConditionTrue, connectorstatus.ReasonSecretOptional)
		newConnector(t, ns, "needs-secret", sonar, up.URL)
		waitCondition(t, ns, "needs-secret", v1alpha1.ConditionSecretReady, metav1.ConditionFalse, connectorstatus.ReasonSecretRequired)
	})

	t.Run("probes through the class API and broken probes", func(t *testing.T) {
		// A class API service as connectorclass_api_spec describes one: it learns the tool's
		// address and the credential from the X-Plugin-* headers, and answers its own paths.
		plugin := startRecorder(t, func(w http.ResponseWriter, r *http.Request) {
			meta, _ := base64.StdEncoding.DecodeString(r.Header.Get(connectorsapi.HeaderPluginMeta))
			secret, _ := base64.StdEncoding.DecodeString(r.Header.Get(connectorsapi.HeaderPluginSecret))
			var data map[string][]byte
			_ = json.Unmarshal(secret, &data)
			switch {
			case string(meta) != `{"baseURL":"`+up.URL+`"}`:
				http.Error(w, "no tool address", http.StatusBadRequest)
			case r.URL.Path == "/api/health":
				_, _ = io.WriteString(w, "up")
			case r.URL.Path == "/api/auth/check" && string(data["token"]) == "good-token":
				_, _ = io.WriteString(w, "valid")
			case r.URL.Path == "/api/auth/check":
				http.Error(w, "invalid", http.StatusUnauthorized)
			default:
				http.NotFound(w, r)
			}
		})
		apiClass := func(prefix string, api *v1alpha1.APISpec) string {
			return classWith(t, prefix, func(c *v1alpha1.ConnectorClass) {
				c.Spec.API = api
				c.Spec.Auth = &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "tokenAuth", SecretType: v1alpha1.SecretTypeBearerToken}}}
				c.Spec.LivenessProbe = &v1alpha1.Probe{API: &v1alpha1.APIProbe{Path: "/health"}}
				c.Spec.AuthProbes = []v1alpha1.AuthProbe{{AuthName: "tokenAuth", Probe: v1alpha1.Probe{API: &v1alpha1.APIProbe{Path: "/auth/check"}}}}
			})
		}
		viaAPI := apiClass("via-api", &v1alpha1.APISpec{Destination: v1alpha1.Destination{URI: plugin.URL + "/api"}})
		newConnectorWithSecret(t, ns, "via-api-good", viaAPI, up.URL, "tokenAuth", "good")
		newConnectorWithSecret(t, ns, "via-api-bad", viaAPI, up.URL, "tokenAuth", "bad")
		waitCondition(t, ns, "via-api-good", v1alpha1.ConditionLivenessReady, metav1.ConditionTrue, "Reachable")
		waitCondition(t, ns, "via-api-good", v1alpha1.ConditionAuthReady, metav1.ConditionTrue, "Accepted")
		waitCondition(t, ns, "via-api-good", v1alpha1.ConditionReady, metav1.ConditionTrue, "Ready")
		c := waitCondition(t, ns, "via-api-bad", v1alpha1.ConditionAuthReady, metav1.ConditionFalse, "Rejected")
		assertNoSecretInStatus(t, c, "bad-token-5150")
		var paths []string
		for _, r := range plugin.requests() {
			if r.UserAgent != connectorstatus.ProbeUserAgent || r.Authorization != "" {
				t.Errorf("the class API got %+v: not a probe, or the credential outside X-Plugin-Secret", r)
			}
			paths = append(paths, r.RequestURI)
		}
		if !slices.Contains(paths, "/api/health") || !slices.Contains(paths, "/api/auth/check") {
			t.Errorf("the class API was asked %v, want its address's path + the probe paths", paths)
		}
		// A class whose API address is not resolved (its Service does not exist) says so.
		unresolved := apiClass("no-api", &v1alpha1.APISpec{Destination: v1alpha1.Destination{
			Ref: &v1alpha1.Reference{Kind: "Service", APIVersion: "v1", Name: "absent", Namespace: ns}}})
		newConnector(t, ns, "via-no-api", unresolved, up.URL)
		waitCondition(t, ns, "via-no-api", v1alpha1.ConditionLivenessReady, metav1.ConditionFalse, connectorstatus.ReasonAPINotResolved)

		broken := classWith(t, "broken", func(c *v1alpha1.ConnectorClass) {
			c.Spec.Auth = &v1alpha1.AuthSpec{Types: []v1alpha1.AuthType{{Name: "tokenAuth", SecretType: v1alpha1.SecretTypeBearerToken}}}
			c.Spec.LivenessProbe = nil
			c.Spec.AuthProbes = []v1alpha1.AuthProbe{{AuthName: "tokenAuth", Probe: v1alpha1.Probe{HTTP: &v1alpha1.HTTPProbe{Path: "/",
				HTTPHeaders: []v1alpha1.HTTPHeader{{Name: "Authorization", Value: `{{ fail .Secret.StringData.token }}`}}}}}}
		})
		newConnectorWithSecret(t, ns, "broken", broken, up.URL, "tokenAuth", "bad")
		c = waitCondition(t, ns, "broken", v1alpha1.ConditionAuthReady, metav1.ConditionFalse, connectorstatus.ReasonInvalidProbe)
		assertNoSecretInStatus(t, c, "bad-token-5150")
		if msg := condMessage(c, v1alpha1.ConditionAuthReady); !strings.Contains(msg, "probe header Authorization") {
			t.Errorf("the message does not name the header whose template failed: %q", msg)
		}

		badCEL := classWith(t, "bad-cel", func(c *v1alpha1.ConnectorClass) {
			c.Spec.AuthProbes = nil
			c.Spec.LivenessProbe = &v1alpha1.Probe{HTTP: &v1alpha1.HTTPProbe{Path: "/api/system/status",
				Response: &v1alpha1.ProbeResponse{CEL: `response.body.status`}}}
		})
		newConnector(t, ns, "bad-cel", badCEL, up.URL)
		c = waitCondition(t, ns, "bad-cel", v1alpha1.ConditionLivenessReady, metav1.ConditionFalse, connectorstatus.ReasonInvalidProbe)
		if msg := condMessage(c, v1alpha1.ConditionLivenessReady); !strings.Contains(msg, "does not yield a bool") {
			t.Errorf("the message does not say what is wrong with response.cel: %q", msg)
		}
	})
}

func condMessage(c *v1alpha1.Connector, typ string) string {
	for _, cond := range c.Status.Conditions {
		if cond.Type == typ {
			return cond.Message
		}
	}
	return ""
}

// assertNoSecretInStatus fails when a condition quotes the credential.
func assertNoSecretInStatus(t *testing.T, c *v1alpha1.Connector, secret string) {
	t.Helper()
	for _, cond := range c.Status.Conditions {
		if strings.Contains(cond.Message, secret) {
			t.Errorf("condition %s quotes the credential: %q", cond.Type, cond.Message)
		}
	}
}

// silentTool listens on loopback, reads each request's first line and never answers; seen
// returns the lines read.
func silentTool(t *testing.T) (url string, seen func() []string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	var held []net.Conn
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn)
			mu.Unlock()
			go func() {
				line, _ := bufio.NewReader(conn).ReadString('\n')
				mu.Lock()
				lines = append(lines, line)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return "http://" + l.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(lines)
	}
}
