package connectorsapi

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/kube-connectors/connectors-csi/proxy"
	"github.com/kube-connectors/connectors-csi/test/gitserver"
)

// BenchmarkGitRefs lists a repository of 5,000 refs from a real git http-backend, filters and
// pages it, as one gitrefs call does.
func BenchmarkGitRefs(b *testing.B) {
	s, err := gitserver.Start(b.TempDir(), false)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var branches, tags []string
	for i := 0; i < 2500; i++ {
		branches = append(branches, fmt.Sprintf("feature-%04d", i))
		tags = append(tags, fmt.Sprintf("v1.%04d", i))
	}
	if err := s.AddRefs(branches, tags); err != nil {
		b.Fatal(err)
	}
	up := &proxy.Upstream{Username: s.Username, Password: s.Password}
	req, _ := http.NewRequest(http.MethodGet, "/?search=feature-01&itemsPerPage=20", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		refs, err := listRefs(context.Background(), s.URL+"/repo.git", up)
		if err != nil {
			b.Fatal(err)
		}
		if len(refs) != 5001 {
			b.Fatalf("%d refs, want 5001", len(refs))
		}
		list, err := page(req, refs)
		if err != nil || list.ListMeta.TotalItems != 100 || len(list.Items) != 20 {
			b.Fatalf("page: %+v %v", list.ListMeta, err)
		}
	}
}

func TestPage(t *testing.T) {
	items := []Item{{Name: "b"}, {Name: "a"}, {Name: "ab"}, {Name: "c"}}
	req, _ := http.NewRequest(http.MethodGet, "/?search=a&itemsPerPage=1&page=2", nil)
	list, err := page(req, items)
	if err != nil || list.ListMeta.TotalItems != 2 || len(list.Items) != 1 || list.Items[0].Name != "ab" {
		t.Fatalf("page = %+v, %v", list, err)
	}
	req, _ = http.NewRequest(http.MethodGet, "/?page=0", nil)
	if _, err := page(req, items); err == nil {
		t.Fatal("page=0 accepted")
	}
	req, _ = http.NewRequest(http.MethodGet, "/?page=9", nil)
	if list, err := page(req, items); err != nil || len(list.Items) != 0 || list.ListMeta.TotalItems != 4 {
		t.Fatalf("past the end: %+v %v", list, err)
	}
}
