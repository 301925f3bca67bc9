//go:build realnode

package realnode

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/kube-connectors/connectors-csi/test/controlplane"
)

// TestMavenTaskRunExample applies deploy/examples/tekton/maven-deploy.yaml (its namespace,
// repository address, credential and image replaced by the test's) with Debian's maven in an
// image the lane built: Tekton's controller runs the TaskRun, whose mvn deploys a jar to a
// real Maven repository (nginx WebDAV behind Basic auth, in the tools' namespace, which Pods
// cannot reach but through the proxy) through the forward proxy and resolves it back, with its
// plugins, through the mirror at the reverse proxy — with only settings.xml and the Pod token.
// The jar the TaskRun reports is the one the repository holds; the repository saw the
// Connector's credential on every request and never the Pod token.
func TestMavenTaskRunExample(t *testing.T) {
	startTekton(t)
	applyClass(t, "maven.yaml")
	ns := "maven"
	createNamespace(t, ns)
	repo := startMavenTool(t)
	example := exampleWith(t, filepath.Join(controlplane.RepoRoot(), "deploy", "examples", "tekton", "maven-deploy.yaml"),
		"namespace: team", "namespace: "+ns,
		"https://maven.example.com/repository/maven-releases", repo.URL,
		"username: deployer", "username: "+repo.Username,
		"password: change-me", "password: "+repo.Password,
		"docker.io/library/maven:3.9-eclipse-temurin-17", "localhost/maven:e2e")
	if _, err := node.CP.Kubectl(example, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	status := waitTaskRun(t, ns, "maven-deploy")
	jar, err := os.ReadFile(filepath.Join(repo.Root, "com/example/hello/1.0.0/hello-1.0.0.jar"))
	if err != nil {
		t.Fatalf("the repository holds no deployed jar: %v", err)
	}
	if !strings.Contains(string(jar), "built by TaskRun maven-deploy") {
		t.Errorf("the deployed jar is %q", jar)
	}
	sum := sha256.Sum256(jar)
	if got := status.result("sha256"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("the TaskRun resolved a jar with SHA-256 %q, the repository holds %x", got, sum)
	}
	reqs, err := repo.Requests()
	if err != nil {
		t.Fatal(err)
	}
	var put, get bool
	for _, r := range reqs {
		put = put || r.Method == "PUT" && strings.HasSuffix(r.URI, "/hello-1.0.0.jar")
		get = get || r.Method == "GET" && strings.HasSuffix(r.URI, "/hello-1.0.0.jar")
		if r.User != repo.Username {
			t.Errorf("the repository saw %s %s as user %q (status %s)", r.Method, r.URI, r.User, r.Status)
		}
	}
	if !put || !get {
		t.Errorf("the repository saw no PUT (%v) or no GET (%v) of the jar: %+v", put, get, reqs)
	}
	pod, err := node.CP.Kube.CoreV1().Pods(ns).Get(context.Background(), status.PodName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deleteAndCheckUnmounted(t, pod)
}

// TestNpmPublishAndInstallInPod: a Pod with node and npm (an image the lane built from this
// machine's) and only the npm Connector's .npmrc publishes a package to a real Verdaccio in the
// tools' namespace and installs it back, both through the forward proxy the .npmrc names; the
// registry saw the Connector's user, and the container holds neither its password nor the
// registry's address outside the rendered files.
func TestNpmPublishAndInstallInPod(t *testing.T) {
	ctx, kube := context.Background(), node.CP.Kube
	applyClass(t, "npm.yaml")
	ns := "npm"
	createNamespace(t, ns)
	registry := startNpmTool(t)
	user := registry.Users[0]
	createConnector(t, ns, "npm", "npm", registry.URL, user.Name, user.Password)
	results := filepath.Join(node.Dir, "results", "npm")
	if err := os.MkdirAll(results, 0o777); err != nil {
		t.Fatal(err)
	}
	pkg := "connectors-pod-demo-" + rand.String(5)
	script := fmt.Sprintf(`export HOME=/tmp/home npm_config_userconfig=/connectors/.npmrc npm_config_cache=/tmp/cache npm_config_update_notifier=false
mkdir -p $HOME /tmp/pkg /tmp/app
cd /tmp/pkg && echo '{"name": "%[1]s", "version": "1.0.0", "main": "index.js"}' > package.json &&
echo "module.exports = 'published from a pod';" > index.js &&
npm publish > /results/npm.log 2>&1 &&
cd /tmp/app && echo '{"name": "app", "version": "1.0.0", "private": true}' > package.json &&
npm install %[1]s@1.0.0 >> /results/npm.log 2>&1 &&
cp node_modules/%[1]s/index.js /results/installed.js
echo $? > /results/exit
sleep 3600`, pkg)
	pod, err := kube.CoreV1().Pods(ns).Create(ctx, imagePod(ns, "npm", results, script, "localhost/node:e2e", "npm"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if exit := strings.TrimSpace(waitFile(t, filepath.Join(results, "exit"), 180*time.Second)); exit != "0" {
		log, _ := os.ReadFile(filepath.Join(results, "npm.log"))
		t.Fatalf("npm in the Pod exited %s:\n%s\n--- driver ---\n%s", exit, log, node.tail("driver"))
	}
	if got, _ := os.ReadFile(filepath.Join(results, "installed.js")); !strings.Contains(string(got), "published from a pod") {
		t.Errorf("npm install brought %q", got)
	}
	if !strings.Contains(registry.Log(), `"user":"`+user.Name+`"`) {
		t.Errorf("Verdaccio's log names no request of the Connector's user %s", user.Name)
	}
	if found := searchContainer(t, containerPID(t, "npm", "c"), user.Password); len(found) > 0 {
		t.Errorf("the container sees the registry's password in %v", found)
	}
	deleteAndCheckUnmounted(t, pod)
}
