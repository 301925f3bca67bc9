package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// This file is the proxy's denied paths: the tools' endpoints that hand out the credential the
// proxy injects, or a new one (JFrog's API key of the user, GitLab's rotation of the token
// itself, a Harbor robot account), which the proxy never sends a request to with a Connector's
// credential. A caller allowed to use a Connector must not be able to take its credential away:
// outside the proxy it outlives the Pod, any approval's revocation, and the node. The node's
// list (--proxy-denied-paths, DefaultDeniedPaths unless set) holds for every Connector whatever
// its class (a GitLab behind the generic git class, Alauda's classes, which have no list); a
// class's spec.proxy.deniedPaths adds its own.
//
// Why by hand: what a tool's router takes as the same path (case, ";" parameters, format
// suffixes, encoded slashes, "\" as a separator) is no library's model; the match errs on the
// side of refusing.

// DefaultDeniedPaths are --proxy-denied-paths' default: endpoints of the tools this project
// ships classes for that answer with the caller's credential or mint one the caller would hold.
// Each names its API's own prefix, so that no other tool's paths are caught.
var DefaultDeniedPaths = []string{
	// JFrog Artifactory: the user's API key, encrypted password and tokens; npm's and RubyGems'
	// login answers (npm's _auth is user:password; the npm package named "auth" is refused
	// with it: JFrog serves both at one path); Conan's token.
	"/api/security/apiKey",
	"/api/security/encryptedPassword",
	"/api/security/token",
	"/access/api/v1/tokens",
	"/api/npm/auth",
	"/api/npm/*/auth",
	"/api/gems/*/api/v1/api_key",
	"/api/conan/*/*/users/authenticate",
	// Harbor: the registry's token service (Harbor takes Basic on /v2/ itself, so Docker-style
	// clients do not need it), robot accounts, a user's CLI secret and password, and the
	// current user, whose answer holds its CLI secret (the Basic password) under OIDC.
	"/service/token",
	"/api/v2.0/robots",
	"/api/v2.0/projects/*/robots",
	"/api/v2.0/users/current",
	"/api/v2.0/users/*/cli_secret",
	"/api/v2.0/users/*/password",
	// GitLab: a token's rotation (which also revokes the Connector's), personal, impersonation,
	// service account, project, group and deploy tokens, SSH and deploy keys (git access that
	// outlives the token), runners and their tokens (which receive jobs), pipeline trigger and
	// cluster agent tokens. A project's or group's path in its ID (group%2Fproject) is one
	// segment as sent.
	"/api/v4/personal_access_tokens/*/rotate",
	"/api/v4/user/personal_access_tokens",
	"/api/v4/users/*/personal_access_tokens",
	"/api/v4/users/*/impersonation_tokens",
	"/api/v4/groups/*/service_accounts/*/personal_access_tokens",
	"/api/v4/projects/*/access_tokens",
	"/api/v4/groups/*/access_tokens",
	"/api/v4/projects/*/deploy_tokens",
	"/api/v4/groups/*/deploy_tokens",
	"/api/v4/user/keys",
	"/api/v4/users/*/keys",
	"/api/v4/projects/*/deploy_keys",
	"/api/v4/user/runners",
	"/api/v4/runners/*/reset_authentication_token",
	"/api/v4/projects/*/runners/reset_registration_token",
	"/api/v4/groups/*/runners/reset_registration_token",
	"/api/v4/projects/*/triggers",
	"/api/v4/projects/*/cluster_agents/*/tokens",
	// Nexus Repository: the user token (Pro) and a user's password.
	"/service/rest/internal/current-user/user-token",
	"/service/rest/v1/security/users/*/change-password",
	// SonarQube: the user's tokens, and a user's password.
	"/api/user_tokens",
	"/api/users/change_password",
	// Kubernetes: ServiceAccount tokens (kubectl create token) and certificate approvals.
	"/api/v1/namespaces/*/serviceaccounts/*/token",
	"/apis/certificates.k8s.io/*/certificatesigningrequests/*/approval",
}

// ValidDeniedPath says what is wrong with a denied path, or nil: as the CRD's pattern, a "/"
// and segments of no "/", "\", ";", "%", "?" or "#", one at least.
func ValidDeniedPath(entry string) error {
	if !strings.HasPrefix(entry, "/") || len(pathSegments(entry, nil)) == 0 || strings.ContainsAny(entry, `\;%?#`) || strings.Contains(entry, "//") {
		return fmt.Errorf("%q is not a denied path: write a \"/\" and path segments, without \"\\\", \";\", \"%%\", \"?\" or \"#\"", entry)
	}
	return nil
}

// deniedPaths are compiled denied paths: their entries, each split into its segments, indexed
// by one literal segment (its anchor), so that a path is looked up segment by segment rather
// than compared with every entry.
type deniedPaths struct {
	entries  []deniedEntry
	byAnchor map[string][]int // the anchor in lower case, less a format suffix → entries
	all      []int            // every entry, for a segment that is no key (long, or not ASCII)
	// starts has, by an anchor's length, a bit for the letter (or other byte: bit 26) it
	// starts with: most of a path's segments are of no anchor's length and letter, and are
	// passed over without a lookup (every request of a remembered route is checked).
	starts [maxAnchorKey + 1]uint32
}

// maxAnchorKey is the longest segment looked up by key; longer ones are compared with every
// entry.
const maxAnchorKey = 63

// startBit is the bit of starts for a segment's first byte c.
func startBit(c byte) uint32 {
	switch {
	case 'a' <= c && c <= 'z':
		return 1 << (c - 'a')
	case 'A' <= c && c <= 'Z':
		return 1 << (c - 'A')
	}
	return 1 << 26
}

// deniedEntry is one denied path, and who denies it (a class's name, or "" for the node).
type deniedEntry struct {
	text, class string
	segs        []string
	anchor      int // the index in segs of its last segment that is not "*", the most telling
}

// compileDeniedPaths compiles the node's entries (class "") or a class's; nil for none.
func compileDeniedPaths(class string, entries []string) *deniedPaths {
	return (*deniedPaths)(nil).with(class, entries)
}

// with is d and entries of class, compiled anew (d is shared: routes hold it); d itself when
// entries add nothing.
func (d *deniedPaths) with(class string, entries []string) *deniedPaths {
	var add []deniedEntry
	for _, text := range entries {
		segs := pathSegments(text, nil)
		anchor := len(segs) - 1
		for anchor >= 0 && segs[anchor] == "*" {
			anchor--
		}
		if anchor >= 0 {
			add = append(add, deniedEntry{text: text, class: class, segs: segs, anchor: anchor})
		}
	}
	if len(add) == 0 {
		return d
	}
	out := &deniedPaths{byAnchor: map[string][]int{}}
	if d != nil {
		out.entries = append(out.entries, d.entries...)
	}
	out.entries = append(out.entries, add...)
	for i, e := range out.entries {
		key := strings.ToLower(formatless(e.segs[e.anchor]))
		out.byAnchor[key] = append(out.byAnchor[key], i)
		out.all = append(out.all, i)
		if len(key) <= maxAnchorKey {
			out.starts[len(key)] |= startBit(key[0])
		}
	}
	return out
}

// forClass is d with class's spec.proxy.deniedPaths added.
func (d *deniedPaths) forClass(class *v1alpha1.ConnectorClass) *deniedPaths {
	if class == nil || class.Spec.Proxy == nil {
		return d
	}
	return d.with(class.Name, class.Spec.Proxy.DeniedPaths)
}

// check refuses (403) a request to escaped, a tool path as it will be sent, that reaches one of
// d's entries; nil for a nil d. The error names the entry and who denies it, not the path.
func (d *deniedPaths) check(escaped string) error {
	if d == nil {
		return nil
	}
	e, denied := d.reached(escaped)
	switch {
	case !denied:
		return nil
	case e == nil:
		return refusef(http.StatusForbidden, "the proxy sends no credential to a path it cannot decode (denied paths are looked for in every decoding)")
	case e.class == "":
		return refusef(http.StatusForbidden, "the proxy denies %q (--proxy-denied-paths): it would hand the caller a credential of the Connector", e.text)
	}
	return refusef(http.StatusForbidden, "ConnectorClass %q denies %q through the proxy (spec.proxy.deniedPaths): "+
		"it would hand the caller a credential of the Connector", e.class, e.text)
}

// reached returns the entry escaped reaches, looking through the layers of percent-encoding
// CheckPath looks through (a tool may decode an encoded slash, or decode twice): nil and true
// when a layer does not decode.
func (d *deniedPaths) reached(escaped string) (entry *deniedEntry, denied bool) {
	p := escaped
	for layer := 0; ; layer++ {
		if e := d.reachedIn(p); e != nil {
			return e, true
		}
		if layer == MaxDecodings || !strings.Contains(p, "%") {
			return nil, false
		}
		decoded, err := url.PathUnescape(p)
		if err != nil {
			return nil, true
		}
		if decoded == p {
			return nil, false
		}
		p = decoded
	}
}

// reachedIn is reached for one layer: the entry whose segments p's hold in a row, looked up by
// each of p's segments as an anchor.
func (d *deniedPaths) reachedIn(p string) *deniedEntry {
	var buf [32]string
	segs := pathSegments(p, buf[:0])
	var lower [maxAnchorKey]byte
	for at, seg := range segs {
		seg = formatless(seg)
		if len(seg) <= maxAnchorKey && d.starts[len(seg)]&startBit(seg[0]) == 0 {
			continue // no anchor of its length starts so
		}
		key, ok := lowerASCII(seg, lower[:0])
		if !ok {
			if e := d.reachedAt(segs, at, d.all); e != nil { // a long or non-ASCII segment: every entry
				return e
			}
			continue
		}
		if e := d.reachedAt(segs, at, d.byAnchor[string(key)]); e != nil {
			return e
		}
	}
	return nil
}

// reachedAt is the entry of candidates whose anchor, at segs[at], starts a match.
func (d *deniedPaths) reachedAt(segs []string, at int, candidates []int) *deniedEntry {
	for _, i := range candidates {
		e := &d.entries[i]
		start := at - e.anchor
		if start >= 0 && start+len(e.segs) <= len(segs) && segmentsMatch(e.segs, segs[start:start+len(e.segs)]) {
			return e
		}
	}
	return nil
}

// lowerASCII appends s in lower case to buf, if s is ASCII and fits in buf's capacity (an
// anchor is matched without regard to ASCII case: a key of another case is looked up so).
func lowerASCII(s string, buf []byte) ([]byte, bool) {
	if len(s) > cap(buf) {
		return nil, false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return nil, false
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return buf, true
}

// formatless is seg less a format suffix: Grape (GitLab's API), Rails, SonarQube's web
// services and Spring's suffix matching route "rotate.json" as "rotate".
func formatless(seg string) string {
	if i := strings.IndexByte(seg, '.'); i > 0 {
		return seg[:i]
	}
	return seg
}

// segmentsMatch tells whether segs match pattern segment by segment: "*" any one, others
// without regard to case or a format suffix.
func segmentsMatch(pattern, segs []string) bool {
	for i, want := range pattern {
		if want == "*" {
			continue
		}
		seg := segs[i]
		if len(seg) > len(want) && seg[len(want)] == '.' {
			seg = seg[:len(want)]
		}
		if !strings.EqualFold(want, seg) {
			return false
		}
	}
	return true
}

// pathSegments appends p's segments to segs: split at "/" and at "\" (some servers take it
// as one), each less its ";" parameters (Tomcat's path parameters), empty ones left out (a
// server that merges slashes sees none).
func pathSegments(p string, segs []string) []string {
	start, params := 0, -1
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' && p[i] != '\\' {
			if p[i] == ';' && params < 0 {
				params = i
			}
			continue
		}
		end := i
		if params >= 0 {
			end = params
		}
		if end > start {
			segs = append(segs, p[start:end])
		}
		start, params = i+1, -1
	}
	return segs
}
