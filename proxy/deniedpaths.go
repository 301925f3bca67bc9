package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// This file is a class's spec.proxy.deniedPaths: the tool's endpoints that hand out the
// credential the proxy injects, or a new one (JFrog's API key of the user, GitLab's rotation of
// the token itself), which the proxy never sends a request to with a Connector's credential. A
// caller allowed to use a Connector must not be able to take its credential away: outside the
// proxy it outlives the Pod, any approval's revocation, and the node.
//
// Why by hand: what a tool's router takes as the same path (case, ";" parameters, encoded
// slashes, "\" as a separator) is no library's model; the match errs on the side of refusing.

// deniedPaths are a class's denied paths, each split into its segments (compiled once per
// route).
type deniedPaths struct {
	class   string
	entries []string
	segs    [][]string
}

// deniedPathsOf compiles class's spec.proxy.deniedPaths; nil when it has none.
func deniedPathsOf(class *v1alpha1.ConnectorClass) *deniedPaths {
	if class == nil || class.Spec.Proxy == nil || len(class.Spec.Proxy.DeniedPaths) == 0 {
		return nil
	}
	d := &deniedPaths{class: class.Name}
	for _, entry := range class.Spec.Proxy.DeniedPaths {
		if segs := pathSegments(entry, nil); len(segs) > 0 {
			d.entries, d.segs = append(d.entries, entry), append(d.segs, segs)
		}
	}
	if len(d.segs) == 0 {
		return nil
	}
	return d
}

// check refuses (403) a request to escaped, a tool path as it will be sent, that reaches one of
// d's entries; nil for a nil d. The error names the class and the entry, not the path.
func (d *deniedPaths) check(escaped string) error {
	if d == nil {
		return nil
	}
	entry, denied := d.reached(escaped)
	if !denied {
		return nil
	}
	return refusef(http.StatusForbidden, "ConnectorClass %q denies %s through the proxy (spec.proxy.deniedPaths): "+
		"it would hand the caller a credential of the Connector", d.class, entryName(entry))
}

// entryName quotes a denied path for an error; an entry that matched no path (a decoding
// failure) is named as such.
func entryName(entry string) string {
	if entry == "" {
		return "a path it cannot decode"
	}
	return fmt.Sprintf("%q", entry)
}

// reached returns the entry escaped reaches, looking through the layers of percent-encoding
// CheckPath looks through (a tool may decode an encoded slash, or decode twice): "" and true
// when a layer does not decode.
func (d *deniedPaths) reached(escaped string) (entry string, denied bool) {
	p := escaped
	for layer := 0; ; layer++ {
		if entry, denied := d.reachedIn(p); denied {
			return entry, true
		}
		if layer == MaxDecodings || !strings.Contains(p, "%") {
			return "", false
		}
		decoded, err := url.PathUnescape(p)
		if err != nil {
			return "", true
		}
		if decoded == p {
			return "", false
		}
		p = decoded
	}
}

// reachedIn is reached for one layer: whether p's segments hold an entry's in a row.
func (d *deniedPaths) reachedIn(p string) (string, bool) {
	var buf [32]string
	segs := pathSegments(p, buf[:0])
	for i, entry := range d.segs {
		for start := 0; start+len(entry) <= len(segs); start++ {
			if segmentsMatch(entry, segs[start:start+len(entry)]) {
				return d.entries[i], true
			}
		}
	}
	return "", false
}

// segmentsMatch tells whether segs match pattern segment by segment: "*" any one, others
// without regard to case or a format suffix (segmentMatches).
func segmentsMatch(pattern, segs []string) bool {
	for i, want := range pattern {
		if want != "*" && !segmentMatches(want, segs[i]) {
			return false
		}
	}
	return true
}

// segmentMatches tells whether seg is want, in any case, or want followed by "." and a format:
// Grape (GitLab's API), Rails, SonarQube's web services and Spring's suffix matching route
// "rotate.json" as "rotate".
func segmentMatches(want, seg string) bool {
	if len(seg) > len(want) && seg[len(want)] == '.' {
		seg = seg[:len(want)]
	}
	return strings.EqualFold(want, seg)
}

// pathSegments appends p's segments to segs: split at "/" and at "\" (some servers take it
// as one), each less its ";" parameters (Tomcat's path parameters), empty ones left out (a
// server that merges slashes sees none).
func pathSegments(p string, segs []string) []string {
	for p != "" {
		seg := p
		if i := strings.IndexAny(p, `/\`); i >= 0 {
			seg, p = p[:i], p[i+1:]
		} else {
			p = ""
		}
		if j := strings.IndexByte(seg, ';'); j >= 0 {
			seg = seg[:j]
		}
		if seg != "" {
			segs = append(segs, seg)
		}
	}
	return segs
}
