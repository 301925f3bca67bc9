package mavenrepo

import (
	"net/http"
	"strings"
	"testing"
)

// TestOnlyBasicWithItsPassword checks the repository refuses requests without its Basic
// credential, for its own files and Debian's alike, and takes PUTs with it.
func TestOnlyBasicWithItsPassword(t *testing.T) {
	if missing := Missing(); missing != "" {
		t.Fatalf("%s is not installed: run hack/tools.sh (hack/tools/maven.sh)", missing)
	}
	s, err := Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	plugin := s.URL + "/org/apache/maven/plugins/maven-deploy-plugin/3.0.0/maven-deploy-plugin-3.0.0.pom"
	for _, tc := range []struct {
		method, url, user, pass string
		want                    int
	}{
		{http.MethodGet, plugin, "", "", http.StatusUnauthorized},
		{http.MethodGet, plugin, s.Username, "wrong", http.StatusUnauthorized},
		{http.MethodPut, s.URL + "/a/b/c.jar", "", "", http.StatusUnauthorized},
		{http.MethodGet, plugin, s.Username, s.Password, http.StatusOK},
		{http.MethodPut, s.URL + "/a/b/c.jar", s.Username, s.Password, http.StatusCreated},
		{http.MethodGet, s.URL + "/a/b/c.jar", s.Username, s.Password, http.StatusOK},
		{http.MethodGet, s.URL + "/a/b/missing.jar", s.Username, s.Password, http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader("jar"))
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("%s %s as %q: %d, want %d", tc.method, tc.url, tc.user, res.StatusCode, tc.want)
		}
	}
	reqs, err := s.Requests()
	if err != nil || len(reqs) != 7 {
		t.Errorf("access log: %d requests (%v), want 7", len(reqs), err)
	}
}
