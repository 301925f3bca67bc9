package approval

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kube-connectors/connectors-csi/node/records"
)

func TestLabelValue(t *testing.T) {
	if got := LabelValue("build-1-pod"); got != "build-1-pod" {
		t.Errorf("a short name became %q", got)
	}
	long := strings.Repeat("a", 57) + ".b" + strings.Repeat("c", 194)
	other := strings.Repeat("a", 57) + ".b" + strings.Repeat("d", 194)
	for _, name := range []string{long, other, strings.Repeat("x", 64), strings.Repeat("a", 52) + "." + strings.Repeat("b", 200)} {
		v := LabelValue(name)
		if problems := validation.IsValidLabelValue(v); len(problems) > 0 {
			t.Errorf("LabelValue(%.20s…) = %q: %v", name, v, problems)
		}
		if !strings.HasPrefix(v, name[:20]) {
			t.Errorf("LabelValue(%.20s…) = %q is not readable", name, v)
		}
	}
	if LabelValue(long) == LabelValue(other) {
		t.Error("two long names share a label value")
	}
}

func TestRequestNameIsASubdomain(t *testing.T) {
	for _, pod := range []string{"p", strings.Repeat("a", 238) + "." + strings.Repeat("b", 14), strings.Repeat("a", 237) + "-" + strings.Repeat("b", 15), strings.Repeat("a", 253)} {
		name := RequestName("prod", records.Pod{Namespace: "team", Name: pod, UID: "u"})
		if problems := validation.IsDNS1123Subdomain(name); len(problems) > 0 {
			t.Errorf("RequestName for a Pod of %d characters: %q: %v", len(pod), name, problems)
		}
	}
}
