package proxy

import (
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"

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
// An entry is matched where a tool's API lives: at the start of the path under the
// Connector's address, or one segment further (a context path such as JFrog's /artifactory or
// a GitLab under /gitlab): not deeper, where a repository's own paths are (a Maven group
// com/acme/service/token, an image library/api/user_tokens), which are the tenants' to name.
//
// Why by hand: what a tool's router takes as the same path (case, ";" parameters, format
// suffixes, encoded slashes, "\" as a separator) is no library's model; the match errs on the
// side of refusing.

// DefaultDeniedPaths are --proxy-denied-paths' default: endpoints of the tools this project
// ships classes for that answer with the caller's credential or mint one the caller would hold.
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
	// Harbor: robot accounts, a user's CLI secret and password, and the current user, whose
	// answer holds its CLI secret (the Basic password) under OIDC. (Its registry token service
	// is with the other registries' below.)
	"/api/v2.0/robots",
	"/api/v2.0/projects/*/robots",
	"/api/v2.0/users/current",
	"/api/v2.0/users/*/cli_secret",
	"/api/v2.0/users/*/password",
	// GitLab: a token's rotation (which also revokes the Connector's), personal, impersonation,
	// service account, project, group and deploy tokens, SSH and deploy keys (git access that
	// outlives the token), runners and their tokens (which receive jobs), pipeline trigger and
	// cluster agent tokens, and Conan's token. A project's or group's path in its ID
	// (group%2Fproject) is one segment, as Grape splits the path before it decodes it.
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
	"/api/v4/deploy_keys",
	"/api/v4/groups/*/ssh_certificates",
	"/api/v4/user/runners",
	"/api/v4/runners/*/reset_authentication_token",
	"/api/v4/runners/reset_registration_token",
	"/api/v4/projects/*/runners/reset_registration_token",
	"/api/v4/groups/*/runners/reset_registration_token",
	"/api/v4/projects/*/triggers",
	"/api/v4/projects/*/cluster_agents/*/tokens",
	"/api/v4/packages/conan/v1/users/authenticate",
	"/api/v4/projects/*/packages/conan/v1/users/authenticate",
	// GitLab's ActionCable, whose channel runs GraphQL operations out of the GraphQL paths'
	// reach (graphql.go); only the web UI's live updates use it.
	"/-/cable",
	// GitHub (the REST API: api.github.com's, or a GitHub Enterprise's under /api/v3, which
	// the entries name too for a Connector at the server's root): deploy and SSH keys, Actions
	// runners' registration, removal and just-in-time configuration (a runner receives workflow
	// jobs and their secrets), a GitHub App installation's tokens, and a GitHub Enterprise
	// administrator's impersonation tokens.
	"/repos/*/*/keys",
	"/user/keys",
	"/repos/*/*/actions/runners/registration-token",
	"/repos/*/*/actions/runners/remove-token",
	"/repos/*/*/actions/runners/generate-jitconfig",
	"/orgs/*/actions/runners/registration-token",
	"/orgs/*/actions/runners/remove-token",
	"/orgs/*/actions/runners/generate-jitconfig",
	"/enterprises/*/actions/runners/registration-token",
	"/enterprises/*/actions/runners/remove-token",
	"/enterprises/*/actions/runners/generate-jitconfig",
	"/app/installations/*/access_tokens",
	"/admin/users/*/authorizations",
	"/api/v3/repos/*/*/keys",
	"/api/v3/user/keys",
	"/api/v3/repos/*/*/actions/runners/registration-token",
	"/api/v3/repos/*/*/actions/runners/remove-token",
	"/api/v3/repos/*/*/actions/runners/generate-jitconfig",
	"/api/v3/orgs/*/actions/runners/registration-token",
	"/api/v3/orgs/*/actions/runners/remove-token",
	"/api/v3/orgs/*/actions/runners/generate-jitconfig",
	"/api/v3/enterprises/*/actions/runners/registration-token",
	"/api/v3/enterprises/*/actions/runners/remove-token",
	"/api/v3/enterprises/*/actions/runners/generate-jitconfig",
	"/api/v3/app/installations/*/access_tokens",
	"/api/v3/admin/users/*/authorizations",
	// Gitea and Forgejo (behind the generic git class): a user's tokens (minted with Basic
	// credentials), OAuth2 applications, SSH and deploy keys, Actions runners' registration,
	// and an administrator's edits of users (a password, a key).
	"/api/v1/admin/users",
	"/api/v1/users/*/tokens",
	"/api/v1/user/applications/oauth2",
	"/api/v1/user/keys",
	"/api/v1/repos/*/*/keys",
	"/api/v1/repos/*/*/actions/runners/registration-token",
	"/api/v1/orgs/*/actions/runners/registration-token",
	"/api/v1/user/actions/runners/registration-token",
	"/api/v1/admin/runners/registration-token",
	// Bitbucket Data Center: personal, project and repository access tokens, SSH and access
	// keys, a user's password; Bitbucket Cloud: SSH and deploy keys.
	"/rest/access-tokens",
	"/rest/api/*/users/credentials",
	"/rest/ssh/*/keys",
	"/rest/keys/*/projects/*/ssh",
	"/rest/keys/*/projects/*/repos/*/ssh",
	"/2.0/users/*/ssh-keys",
	"/2.0/repositories/*/*/deploy-keys",
	"/2.0/workspaces/*/projects/*/deploy-keys",
	// Nexus Repository: the user token (Pro) and a user's password.
	"/service/rest/internal/current-user/user-token",
	"/service/rest/v1/security/users/*/change-password",
	// SonarQube: the user's tokens, and a user's password.
	"/api/user_tokens",
	"/api/users/change_password",
	// Kubernetes: ServiceAccount tokens (kubectl create token) and certificate approvals.
	"/api/v1/namespaces/*/serviceaccounts/*/token",
	"/apis/certificates.k8s.io/*/certificatesigningrequests/*/approval",
	// Registries' token services, whose bearer tokens (Harbor's last 30 minutes) outlive the
	// Pod: Harbor's, JFrog's (by repository, and by host), Nexus's, GitLab's and Quay's; each
	// the whole path ("$"), as an image's name may end so (/v2/service/token/manifests/latest).
	// The proxy answers a registry's challenges itself with the Connector's login (SPEC §4.6),
	// so a client has no need of them.
	"/service/token$",
	"/api/docker/*/v2/token$",
	"/v2/token$",
	"/jwt/auth$",
	"/v2/auth$",
}

// maxDeniedPathBytes bounds an entry, as the CRD does.
const maxDeniedPathBytes = 256

// deniedPathPattern is an entry's form, as the CRD's: "/" and segments of RFC 3986's path
// characters less escapes and ";" (a parameter, which matching drops), in ASCII.
var deniedPathPattern = regexp.MustCompile(`^(/[A-Za-z0-9._~!$&'()*+,=:@-]+)+/?$`)

// ValidDeniedPath says what is wrong with a denied path, or nil.
func ValidDeniedPath(entry string) error {
	switch {
	case len(entry) > maxDeniedPathBytes || !deniedPathPattern.MatchString(entry):
		return fmt.Errorf("%q is not a denied path: write \"/\" and path segments of letters, digits and -._~!$&'()*+,=:@ (no escapes, \";\", \"?\" or \"#\"; a final \"$\": the whole path), %d bytes at most", entry, maxDeniedPathBytes)
	case anchorOf(pathSegments(strings.TrimSuffix(entry, "$"), nil)) < 0:
		return fmt.Errorf("%q is not a denied path: \"*\" segments alone would deny every path", entry)
	}
	return nil
}

// deniedPaths are compiled denied paths: their entries, each split into its segments, indexed
// by its last literal segment (its anchor, the most telling), so that a path is looked up
// segment by segment rather than compared with every entry.
type deniedPaths struct {
	entries  []deniedEntry
	byAnchor map[string][]int // the anchor in lower case, less a format suffix → entries
	// starts has, by an anchor's length, a bit for the letter (or other byte: bit 26) it
	// starts with: most of a path's segments are of no anchor's length and letter, and are
	// passed over without a lookup (every request of a remembered route is checked).
	starts [maxDeniedPathBytes + 1]uint32
	// maxAnchor is the largest anchor index: a segment further than it past the last index an
	// entry may start at is no anchor.
	maxAnchor int
	// anyExtension: some entry matches its last segment with any extension (add).
	anyExtension bool
}

// deniedEntry is one denied path, and who denies it (a class's name, or "" for the node).
type deniedEntry struct {
	text, class string
	segs        []string
	anchor      int // the index in segs of its anchor
	// whole: the entry ends in "$", and matches a path that ends where it does (a registry's
	// token service at /service/token, not an image named service/token at
	// /v2/service/token/manifests/latest).
	whole bool
	// anyExtension: a path's segment is compared with the last without any extension (add).
	anyExtension bool
}

// anchorOf is the index of segs' last segment that is not "*", or -1.
func anchorOf(segs []string) int {
	i := len(segs) - 1
	for i >= 0 && segs[i] == "*" {
		i--
	}
	return i
}

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

// compileDeniedPaths compiles the node's entries (class "") or a class's; nil for none (an
// entry the validation would refuse is left out).
func compileDeniedPaths(class string, entries []string) *deniedPaths {
	d := &deniedPaths{byAnchor: map[string][]int{}}
	d.add(class, entries, false)
	return d.orNil()
}

// add compiles entries into d. anyExtension entries match their last segment with any
// extension ("graphql.csv" as "graphql": Rails routes a path with any format to its
// controller), others with a format suffix alone (formatless).
func (d *deniedPaths) add(class string, entries []string, anyExtension bool) {
	for _, text := range entries {
		if ValidDeniedPath(text) != nil {
			continue
		}
		path, whole := strings.CutSuffix(text, "$")
		// A whole path takes any extension too: its end is the route's, where Rails puts a
		// format (GitLab's /jwt/auth.csv is /jwt/auth), and a longer path is no match anyway.
		anyExt := anyExtension || whole
		segs := pathSegments(path, nil)
		for i, seg := range segs {
			segs[i] = formatless(seg) // as a path's segments are compared
		}
		e := deniedEntry{text: text, class: class, segs: segs, anchor: anchorOf(segs), whole: whole, anyExtension: anyExt}
		key, _ := lowerASCII(segs[e.anchor], nil)
		d.byAnchor[string(key)] = append(d.byAnchor[string(key)], len(d.entries))
		d.starts[len(key)] |= startBit(key[0])
		d.maxAnchor = max(d.maxAnchor, e.anchor)
		d.anyExtension = d.anyExtension || anyExt
		d.entries = append(d.entries, e)
	}
}

// orNil is d, or nil when it has no entries.
func (d *deniedPaths) orNil() *deniedPaths {
	if len(d.entries) == 0 {
		return nil
	}
	return d
}

// deniedCheck is what a route's requests are checked against: the node's denied paths and its
// class's, matched within the first within+1 segments of a path (the Connector's address's
// own, and one more).
type deniedCheck struct {
	node, class *deniedPaths
	within      int
	// graphql reads the requests to the node's GraphQL paths (graphql.go); nil: none.
	graphql *graphqlReading
	// classFields are the class's denied GraphQL fields, besides the node's; nil: none.
	classFields *graphqlFields
}

// deniedCheckFor is the check of c's requests, of class.
func (p *Proxy) deniedCheckFor(c *v1alpha1.Connector, class *v1alpha1.ConnectorClass) deniedCheck {
	of := p.classDenied.of(class)
	g := p.graphql
	if g != nil && g.fields == nil && of.fields == nil {
		g = nil // no field to look for: nothing is read, and the fast lane keeps the path
	}
	d := deniedCheck{node: p.denied, class: of.set, graphql: g, classFields: of.fields}
	for _, addr := range parsedAddresses(c) {
		d.within = max(d.within, len(pathSegments(addr.EscapedPath(), nil)))
	}
	d.within++ // a context path
	return d
}

// classDeniedSets keeps each class's compiled denied paths, by its UID, for its generation: a
// route is resolved for every request of the general path, and compiling is a map and an
// entry's validation each. One entry per class (cluster-scoped, an administrator's).
type classDeniedSets struct{ sets sync.Map }

// classDenied is a class's compiled spec.proxy.deniedPaths and deniedGraphQLFields, for its
// generation.
type classDenied struct {
	generation int64
	set        *deniedPaths
	fields     *graphqlFields
}

// of is class's compiled lists; zero when it has none.
func (c *classDeniedSets) of(class *v1alpha1.ConnectorClass) classDenied {
	if class == nil || class.Spec.Proxy == nil || len(class.Spec.Proxy.DeniedPaths) == 0 && len(class.Spec.Proxy.DeniedGraphQLFields) == 0 {
		return classDenied{}
	}
	if v, ok := c.sets.Load(class.UID); ok && v.(classDenied).generation == class.Generation {
		return v.(classDenied)
	}
	compiled := classDenied{generation: class.Generation, set: compileDeniedPaths(class.Name, class.Spec.Proxy.DeniedPaths),
		fields: newGraphQLFields(class.Name, class.Spec.Proxy.DeniedGraphQLFields)}
	if class.UID != "" {
		c.sets.Store(class.UID, compiled)
	}
	return compiled
}

// check refuses (403) a request to escaped, a tool path as it will be sent, that reaches a
// denied path in any decoding. The error names the entry and who denies it, not the path.
func (d deniedCheck) check(escaped string) error {
	if d.node == nil && d.class == nil {
		return nil
	}
	found, undecodable := reaching(escaped, d.within, d.node, d.class)
	switch {
	case found != nil:
		return found.refusal()
	case undecodable:
		return refusef(http.StatusForbidden, "the proxy sends no credential to a path it cannot decode (denied paths are looked for in every decoding)")
	}
	return nil
}

// reaching is the entry of a's or b's (either may be nil) that escaped reaches within the
// window in any of its spellings (as sent, in each decoding, each segment decoded);
// undecodable tells that a layer did not decode.
func reaching(escaped string, within int, a, b *deniedPaths) (found *deniedEntry, undecodable bool) {
	in := func(segs []string) *deniedEntry {
		if e := a.reachedIn(segs, within); e != nil {
			return e
		}
		return b.reachedIn(segs, within)
	}
	undecodable = eachDecoding(escaped, func(p string) bool {
		var buf [32]string
		found = in(pathSegments(p, buf[:0]))
		return found == nil
	})
	if found == nil && strings.Contains(escaped, "%") {
		found = in(decodedSegments(escaped))
	}
	return found, undecodable
}

// decodedSegments are escaped's segments as a router that splits a path at its "/" before it
// decodes each segment sees them (Grape, GitLab's API: /api/v4/projects/grp%2Fproj/access_token%73
// is a project's access_tokens): split as sent, each decoded through the layers CheckPath
// looks through.
func decodedSegments(escaped string) []string {
	segs := pathSegments(escaped, nil)
	for i, seg := range segs {
		eachDecoding(seg, func(p string) bool { segs[i] = p; return true }) // its last decoding
	}
	return segs
}

// refusal is the 403 of a request that reached e.
func (e *deniedEntry) refusal() error {
	if e.class == "" {
		return refusef(http.StatusForbidden, "the proxy denies %q (--proxy-denied-paths): it would hand the caller a credential of the Connector", e.text)
	}
	return refusef(http.StatusForbidden, "ConnectorClass %q denies %q through the proxy (spec.proxy.deniedPaths): "+
		"it would hand the caller a credential of the Connector", e.class, e.text)
}

// eachDecoding calls visit with escaped and each layer of percent-decoding CheckPath looks
// through (a tool may decode an encoded slash, or decode twice), until visit returns false;
// undecodable tells that a layer did not decode (visit was not given it).
func eachDecoding(escaped string, visit func(p string) bool) (undecodable bool) {
	p := escaped
	for layer := 0; visit(p); layer++ {
		if layer == MaxDecodings || !strings.Contains(p, "%") {
			return false
		}
		decoded, err := url.PathUnescape(p)
		if err != nil {
			return true
		}
		if decoded == p {
			return false
		}
		p = decoded
	}
	return false
}

// reachedIn is the entry of d whose segments segs hold in a row from an index up to within,
// looked up by each of segs as an anchor; nil for a nil d.
func (d *deniedPaths) reachedIn(segs []string, within int) *deniedEntry {
	if d == nil {
		return nil
	}
	for at, seg := range segs {
		if at > within+d.maxAnchor {
			break
		}
		if e := d.anchoredAt(formatless(seg), segs, at, within, false); e != nil {
			return e
		}
		if !d.anyExtension {
			continue
		}
		for i := 1; i < len(seg); i++ { // the segment as an entry's last one with an extension
			if seg[i] == '.' {
				if e := d.anchoredAt(seg[:i], segs, at, within, true); e != nil {
					return e
				}
			}
		}
	}
	return nil
}

// anchoredAt is the entry of d anchored at segs[at], key being that segment as the entries'
// anchors are written, whose segments segs hold from an index up to within; only entries
// that take any extension when anyExtension.
func (d *deniedPaths) anchoredAt(key string, segs []string, at, within int, anyExtension bool) *deniedEntry {
	if len(key) == 0 || len(key) > maxDeniedPathBytes || d.starts[len(key)]&startBit(key[0]) == 0 {
		return nil // no anchor of its length starts so
	}
	var lower [maxDeniedPathBytes]byte
	lowered, ok := lowerASCII(key, lower[:0])
	if !ok {
		return nil // entries are ASCII
	}
	for _, i := range d.byAnchor[string(lowered)] {
		e := &d.entries[i]
		start := at - e.anchor
		end := start + len(e.segs)
		if (!anyExtension || e.anyExtension && e.anchor == len(e.segs)-1) && start >= 0 && start <= within && (end == len(segs) || !e.whole && end < len(segs)) &&
			segmentsMatch(e.segs, segs[start:end], e.anyExtension) {
			return e
		}
	}
	return nil
}

// lowerASCII appends s in lower case to buf, if s is ASCII (entries are: a key of another
// case is looked up so).
func lowerASCII(s string, buf []byte) ([]byte, bool) {
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

// formats are the suffixes formatless drops: those Grape (GitLab's API), Rails, SonarQube's
// web services and Spring's suffix matching route as the segment without them
// ("rotate.json" as "rotate"; JFrog's RubyGems key is api_key.yaml).
var formats = []string{"json", "xml", "yaml", "yml", "txt", "html", "protobuf"}

// formatless is seg less a format suffix.
func formatless(seg string) string {
	i := strings.LastIndexByte(seg, '.')
	if i <= 0 {
		return seg
	}
	for _, f := range formats {
		if equalFoldASCII(seg[i+1:], f) {
			return seg[:i]
		}
	}
	return seg
}

// segmentsMatch tells whether segs match pattern segment by segment: "*" any one, others in
// any ASCII case, less a format suffix (the last less any extension, for anyExtension).
func segmentsMatch(pattern, segs []string, anyExtension bool) bool {
	for i, want := range pattern {
		if want == "*" {
			continue
		}
		got := segs[i]
		withExtension := anyExtension && i == len(pattern)-1 && len(got) > len(want) && got[len(want)] == '.' && equalFoldASCII(want, got[:len(want)])
		if !withExtension && !equalFoldASCII(want, formatless(got)) {
			return false
		}
	}
	return true
}

// equalFoldASCII is strings.EqualFold for ASCII letters alone: a tool's router that folds
// case does so for them (a Kelvin sign is no "k" to it).
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// pathSegments appends p's segments (segments) to segs.
func pathSegments(p string, segs []string) []string {
	for seg := range segments(p) {
		segs = append(segs, seg)
	}
	return segs
}

// segments are p's segments: split at "/" and at "\" (some servers take it as one), each less
// its ";" parameters (Tomcat's path parameters: "..;x" is ".."), empty ones left out (a
// server that merges slashes sees none). Written here, without allocating: on every proxied
// request's path (CheckPath, denied paths).
func segments(p string) iter.Seq[string] {
	return func(yield func(string) bool) {
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
			if end > start && !yield(p[start:end]) {
				return
			}
			start, params = i+1, -1
		}
	}
}
