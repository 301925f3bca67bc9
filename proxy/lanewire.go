package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/kube-connectors/connectors-csi/proxy/egress"
	"github.com/kube-connectors/connectors-csi/regoeval"
)

// The fast lane's own reading and writing of the heads it meets most: the request head of a
// connection whose route is remembered (laneMemo), the tool request written from it, and a
// tool answer of known length. Each reader takes a strict subset of HTTP/1.1, one that
// net/http reads to the same request or answer, and says no to anything else, which then
// takes the general path (http.ReadRequest, http.ReadResponse) as before; FuzzLaneHead and
// FuzzAnswerHead hold the subset to net/http's own parsers, TestToolHead and TestClientHead
// the heads written to what the general path writes. Written by hand because net/http's
// parsers build a map, strings and slices for every head, which cost the fast lane more CPU
// than the proxying itself (docs/benchmarks.md), and no library parses a head in place with
// net/http's rules of acceptance.

// laneField is one header line: slices of the head it was read from.
type laneField struct{ name, value []byte }

// laneHead is a request head read by readLaneHead, its slices into the head's bytes.
type laneHead struct {
	method string // one of laneMethods
	target []byte
	// contentLength is the Content-Length value (-1: none): a GET or HEAD has none, or 0.
	contentLength int64
	host          []byte
	// auth, proxyAuth and userAgent are those headers' values (nil: absent).
	auth, proxyAuth, userAgent []byte
	close                      bool // the client asked to close the connection after the answer
	// connection are the Connection lines' values (net/http keeps them in the header).
	connection [][]byte
	fields     []laneField
	// pragma is the first Pragma line's value (nil: none), and cacheControl tells whether a
	// Cache-Control line was seen: net/http's reader adds Cache-Control: no-cache to a
	// Pragma: no-cache without one (for HTTP/1.0 caches; Java's clients send it).
	pragma       []byte
	cacheControl bool
}

// addedCacheControl is the header line net/http's reader adds for a Pragma: no-cache.
var addedCacheControl = laneField{name: []byte("Cache-Control"), value: []byte("no-cache")}

// laneMaxFields bounds the header lines of a head the fast lane reads itself.
const laneMaxFields = 64

// readLaneHead reads head, a whole request head (its last line empty), into h, or returns
// false if it is not a request the fast lane reads itself: a GET, HEAD or DELETE without a
// body (ignorableBody), or a POST, PUT or PATCH with none or one of a Content-Length; HTTP/1.1 only; an origin-form
// target, or, outside tunnels, an absolute http:// one of a plain host name;
// header names of token characters right before their colon; values of visible ASCII,
// spaces and tabs; one Host, one Authorization, one Proxy-Authorization, one User-Agent, one
// Content-Length of digits; no Transfer-Encoding, no header that says there is an upgrade, an
// expectation or trailers, names another hop-by-hop header in Connection or carries a proxy's
// hop marker; nothing that may override the method (mayOverride); no folded lines. The
// fields end, as net/http's reader would add it, with a Cache-Control: no-cache for a
// Pragma: no-cache.
func readLaneHead(head []byte, h *laneHead, inTunnel bool) bool {
	*h = laneHead{fields: h.fields[:0], connection: h.connection[:0], contentLength: -1}
	line, rest, ok := cutLine(head)
	if !ok {
		return false
	}
	if line, ok = cutRequestLine(line, h, inTunnel); !ok || string(line) != "HTTP/1.1" {
		return false
	}
	for {
		if line, rest, ok = cutLine(rest); !ok {
			return false
		}
		if len(line) == 0 {
			if string(h.pragma) == "no-cache" && !h.cacheControl {
				h.fields = append(h.fields, addedCacheControl)
			}
			return len(rest) == 0 && h.host != nil && (h.contentLength <= 0 || !bodyMayBeIgnored(h.method)) && !h.mayOverride()
		}
		f, ok := cutField(line)
		if !ok || !h.take(f) {
			return false
		}
	}
}

// cutRequestLine reads the method and target of line into h and returns the protocol.
func cutRequestLine(line []byte, h *laneHead, inTunnel bool) ([]byte, bool) {
	h.method = ""
	for _, m := range laneMethods {
		if rest, ok := bytes.CutPrefix(line, []byte(m)); ok {
			h.method, line = m[:len(m)-1], rest
			break
		}
	}
	if h.method == "" {
		return nil, false
	}
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 || !laneTarget(line[:sp], inTunnel) {
		return nil, false
	}
	h.target = line[:sp]
	return line[sp+1:], true
}

// mayOverride tells whether the request may ask a tool to run another method than its own in
// its query (MethodOverride; the headers that may are refused as they are read): routes are
// remembered by the method's verb.
func (h *laneHead) mayOverride() bool {
	_, query, _ := bytes.Cut(h.target, []byte("?"))
	return hasMethodParam(query)
}

// take files one header line of a request; false for one the fast lane does not read itself.
func (h *laneHead) take(f laneField) bool {
	only := func(into *[]byte) bool {
		if *into != nil {
			return false
		}
		*into = f.value
		return true
	}
	switch name := f.name; {
	case asciiEqual(name, "Host"):
		return only(&h.host) && laneHost(f.value)
	case asciiEqual(name, "Authorization"):
		return only(&h.auth)
	case asciiEqual(name, "Proxy-Authorization"):
		return only(&h.proxyAuth)
	case asciiEqual(name, "User-Agent"):
		return only(&h.userAgent)
	case asciiEqual(name, "Content-Length"):
		// One line of digits (net/http takes repeated equal ones too; the general path takes
		// those), kept among the fields as net/http's reader keeps it in the header.
		if h.contentLength >= 0 || !contentLength(f.value, &h.contentLength) {
			return false
		}
	case asciiEqual(name, "Connection"):
		closes, ok := connectionTokens(f.value)
		h.close = h.close || closes
		h.connection = append(h.connection, f.value)
		return ok
	case laneRefused(name):
		return false
	case asciiEqual(name, "Pragma"):
		if h.pragma == nil {
			h.pragma = f.value
		}
	case asciiEqual(name, "Cache-Control"):
		h.cacheControl = true
	}
	if len(h.fields) == laneMaxFields {
		return false
	}
	h.fields = append(h.fields, f)
	return true
}

// header is r.Header[name] of the request net/http's reader reads from the head h was read
// from (FuzzLaneHead holds the two to each other): the values of the lines of that name, in
// order, for a name in canonical form (the reader files every name so); ok is false for
// none. It serves generators and authExtractors that read headers by name.
func (h *laneHead) header(name string) (values []string, ok bool) {
	ok = h.eachValue(name, func(v []byte) { values = append(values, string(v)) })
	return values, ok
}

// eachValue calls each with the values header gives, in order, and tells whether there are any.
func (h *laneHead) eachValue(name string, each func(value []byte)) (ok bool) {
	if textproto.CanonicalMIMEHeaderKey(name) != name {
		return false
	}
	single := func(v []byte) bool {
		if v != nil {
			each(v)
		}
		return v != nil
	}
	switch name {
	case "Host":
		return false // the reader moves it to r.Host
	case "Authorization":
		return single(h.auth)
	case "Proxy-Authorization":
		return single(h.proxyAuth)
	case "User-Agent":
		return single(h.userAgent)
	case "Connection":
		for _, v := range h.connection {
			each(v)
		}
		return len(h.connection) > 0
	}
	for _, f := range h.fields {
		if asciiEqual(f.name, name) {
			each(f.value)
			ok = true
		}
	}
	return ok
}

// httpHeader is r.Header of the request net/http's reader reads from the head h was read from
// (FuzzLaneHead holds the two to each other): every line but Host's, by canonical name, each
// name's values in order. It serves generators that read the headers whole, in place.
func (h *laneHead) httpHeader() http.Header {
	out := make(http.Header, len(h.fields)+4)
	for _, single := range [...]struct {
		name  string
		value []byte
	}{{"Authorization", h.auth}, {"Proxy-Authorization", h.proxyAuth}, {"User-Agent", h.userAgent}} {
		if single.value != nil {
			out[single.name] = []string{string(single.value)}
		}
	}
	for _, v := range h.connection {
		out["Connection"] = append(out["Connection"], string(v))
	}
	for _, f := range h.fields {
		name := textproto.CanonicalMIMEHeaderKey(string(f.name))
		out[name] = append(out[name], string(f.value))
	}
	return out
}

// headHeaders is a head read in place as a module sees its headers (regoeval.Headers), and
// the parts of an answer key they give (regoeval.HeaderKeys: without copies of the values,
// a token among them).
type headHeaders struct{ h *laneHead }

func (v headHeaders) Lookup(name string) ([]string, bool) { return v.h.header(name) }

func (v headHeaders) AppendKey(key []byte, name string) ([]byte, bool) {
	ok := v.h.eachValue(name, func(value []byte) { key = regoeval.AppendKeyPart(key, value) })
	return key, ok
}

// laneRefused names the request headers whose requests the fast lane does not read itself:
// they mean a body, an upgrade, an expectation or trailers, carry another proxy's hop marker,
// override the method (overrideHeader: routes are remembered by the method's verb), or may
// be named by Connection (Close).
func laneRefused(name []byte) bool {
	for _, refused := range laneRefusedNames {
		if asciiEqual(name, refused) {
			return true
		}
	}
	return overrideHeader(name)
}

var laneRefusedNames = []string{"Transfer-Encoding", "Expect", "Upgrade", "Te", "Trailer", "Close", egress.HopHeader}

// contentLength reads a Content-Length value of 1 to 18 digits (well within int64, and more
// than any body the fast lane takes) into n.
func contentLength(v []byte, n *int64) bool {
	if len(v) == 0 || len(v) > 18 {
		return false
	}
	var x int64
	for _, b := range v {
		if b < '0' || b > '9' {
			return false
		}
		x = x*10 + int64(b-'0')
	}
	*n = x
	return true
}

// connectionTokens reads a Connection value; ok is false unless it names only keep-alive and
// close (any other would name a hop-by-hop header to remove).
func connectionTokens(v []byte) (closes, ok bool) {
	for token := range bytes.SplitSeq(v, []byte(",")) {
		token = bytes.Trim(token, " \t")
		switch {
		case asciiEqual(token, "close"):
			closes = true
		case !asciiEqual(token, "keep-alive"):
			return false, false
		}
	}
	return closes, true
}

// cutLine returns head's first line, without its CRLF, and the rest; false without a CRLF.
func cutLine(head []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(head, '\n')
	if i < 1 || head[i-1] != '\r' {
		return nil, nil, false
	}
	return head[:i-1], head[i+1:], true
}

// cutField splits a header line at its colon, the value's surrounding spaces and tabs
// trimmed; false unless the name is token characters and the value visible ASCII, spaces and
// tabs.
func cutField(line []byte) (laneField, bool) {
	colon := bytes.IndexByte(line, ':')
	if colon < 1 {
		return laneField{}, false
	}
	name, value := line[:colon], trimSpaceTab(line[colon+1:])
	for _, b := range name {
		if !tokenBytes[b] {
			return laneField{}, false
		}
	}
	if !visibleOrBlank(value) {
		return laneField{}, false
	}
	return laneField{name: name, value: value}, true
}

// visibleOrBlank tells whether v is all visible ASCII, spaces and tabs. It looks at eight
// bytes at a time where none is below a space or above '~' (a header value is mostly a token
// of a kilobyte, and this check was the largest part of reading a head).
func visibleOrBlank(v []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(v) >= 8 {
		x := binary.LittleEndian.Uint64(v)
		below := (x - ones*' ') & ^x & highs // a byte < 0x20 (Hacker's Delight's hasless)
		above := (x + ones*(127-'~') | x) & highs
		if below|above != 0 {
			break // a tab, or a byte to refuse: byte by byte from here
		}
		v = v[8:]
	}
	for _, b := range v {
		if b != '\t' && (b < ' ' || b > '~') {
			return false
		}
	}
	return true
}

// trimSpaceTab is v without its leading and trailing spaces and tabs; an empty value stays
// non-nil (nil means absent).
func trimSpaceTab(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// tokenBytes are RFC 9110's tchar, looked up per byte of every header name.
var tokenBytes = func() (t [256]bool) {
	for b := range 256 {
		t[b] = isAlnum(byte(b)) || strings.IndexByte("!#$%&'*+-.^_`|~", byte(b)) >= 0
	}
	return t
}()

func isAlnum(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// laneTarget: an origin-form target or, outside tunnels, an absolute http:// one whose
// authority is a plain host name or address and port, both of unreserved and sub-delimiter
// characters, ':', '@', '/', one '?' and well-formed percent escapes.
func laneTarget(t []byte, inTunnel bool) bool {
	rest, absolute := bytes.CutPrefix(t, []byte("http://"))
	switch {
	case absolute && !inTunnel:
		end := bytes.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		if !laneHost(rest[:end]) {
			return false
		}
		rest = rest[end:]
	case !bytes.HasPrefix(t, []byte("/")):
		return false
	}
	query := false
	for i := 0; i < len(rest); i++ {
		switch b := rest[i]; {
		case isAlnum(b) || strings.IndexByte("-._~!$&'()*+,;=:@/", b) >= 0:
		case b == '?' && !query:
			query = true
		case b == '%' && i+2 < len(rest) && isHex(rest[i+1]) && isHex(rest[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F'
}

// laneHost: a host name or IPv4 address, and a port, as net/http takes them unchanged.
func laneHost(h []byte) bool {
	name, port, hasPort := bytes.Cut(h, []byte(":"))
	if len(name) == 0 || hasPort && len(port) == 0 {
		return false
	}
	for _, b := range name {
		if !isAlnum(b) && b != '-' && b != '.' {
			return false
		}
	}
	for _, b := range port {
		if b < '0' || b > '9' {
			return false
		}
	}
	return true
}

// asciiEqual compares a header name with a canonical one, ignoring ASCII case.
func asciiEqual[T ~string | ~[]byte](b T, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(b byte) byte {
	if b >= 'A' && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

// writeToolHead writes the tool's request for h to host and uri, as the general path sends it
// (outgoing, then Request.Write): the request URI and host, the client's User-Agent if any,
// the body's Content-Length (as Request.Write: for a body, and 0 for a POST, PUT or PATCH
// without one), the client's headers without hop-by-hop, X-Forwarded, Authorization and
// Proxy-* ones and, when the caller's token is one an extractor found, every header of a name
// one of whose lines holds it (tokenFreeInPlace keeps the rest of such a head from here), then
// inj's headers. The caller ends it: with a registry token's Authorization if any, then the
// route's toolHeadTail, then the body.
func writeToolHead(w *bufio.Writer, h *laneHead, host, uri string, inj *regoeval.Injection, callerToken string) {
	_, _ = w.WriteString(h.method)
	_ = w.WriteByte(' ')
	_, _ = w.WriteString(uri)
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = w.WriteString(host)
	_, _ = w.WriteString("\r\n")
	if len(h.userAgent) > 0 {
		writeField(w, "User-Agent", h.userAgent)
	}
	if h.contentLength > 0 || h.method == http.MethodPost || h.method == http.MethodPut || h.method == http.MethodPatch {
		_, _ = w.WriteString("Content-Length: ")
		_, _ = w.Write(strconv.AppendInt(w.AvailableBuffer(), max(h.contentLength, 0), 10))
		_, _ = w.WriteString("\r\n")
	}
	for _, f := range h.fields {
		if !droppedOnTheWay(f.name) && !asciiEqual(f.name, "Content-Length") && !injected(inj, f.name) && !h.nameHolds(f.name, callerToken) {
			writeFieldBytes(w, f.name, f.value)
		}
	}
	if inj != nil {
		for name, value := range inj.Headers {
			writeFieldString(w, name, sanitizedValue(value))
		}
	}
}

// nameHolds tells whether a line of h's fields of name (in any case) holds token ("": none).
func (h *laneHead) nameHolds(name []byte, token string) bool {
	if token == "" {
		return false
	}
	for _, f := range h.fields {
		if bytes.EqualFold(f.name, name) && holds(f.value, token) {
			return true
		}
	}
	return false
}

// holds is bytes.Contains(b, []byte(s)) without the copy of s (a token, often a kilobyte,
// looked for in every head read in place along its route).
func holds(b []byte, s string) bool {
	if s == "" {
		return true
	}
	for len(b) >= len(s) {
		i := bytes.IndexByte(b[:len(b)-len(s)+1], s[0])
		if i < 0 {
			return false
		}
		if string(b[i:i+len(s)]) == s {
			return true
		}
		b = b[i+1:]
	}
	return false
}

// injected tells whether inj sets the header name, which then replaces the client's.
func injected(inj *regoeval.Injection, name []byte) bool {
	if inj == nil {
		return false
	}
	for set := range inj.Headers {
		if asciiEqual(name, set) {
			return true
		}
	}
	return false
}

// injectableInPlace tells whether a generator's header name is one writeToolHead writes as
// applyInjection sets it: not one written apart (Host, User-Agent), framed (Content-Length),
// or dropped on the way (hop-by-hop, Proxy-*, X-Forwarded-*), nor the hop marker.
func injectableInPlace(name string) bool {
	b := []byte(name)
	return !droppedOnTheWay(b) && !asciiEqual(b, "Host") && !asciiEqual(b, "User-Agent") &&
		!asciiEqual(b, "Content-Length") && !asciiEqual(b, egress.HopHeader)
}

// toolHeadTail is what ends a tool request head along rt: its credential, if any, the hop
// marker and the empty line; made once per remembered route.
func toolHeadTail(rt *route) string {
	tail := ""
	if rt.cred.authorization != "" {
		tail = "Authorization: " + sanitizedValue(rt.cred.authorization) + "\r\n"
	}
	return tail + egress.HopHeader + ": " + hopMarker + "\r\n\r\n"
}

// hopMarker is the hop marker's value (hopValue's).
const hopMarker = "1"

// droppedOnTheWay names the client headers the tool never sees: the hop-by-hop ones, every
// Proxy-* one (the Pod token may travel there) and the X-Forwarded ones.
func droppedOnTheWay(name []byte) bool {
	if len(name) >= len("Proxy-") && asciiEqual(name[:len("Proxy-")], "Proxy-") {
		return true
	}
	for _, dropped := range hopByHopHeaders {
		if asciiEqual(name, dropped) {
			return true
		}
	}
	for _, dropped := range forwardedHeaders {
		if asciiEqual(name, dropped) {
			return true
		}
	}
	return false
}

// forwardedHeaders are the headers ReverseProxy removes so that the tool does not trust a
// client's claims of where the request came from.
var forwardedHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// sanitizedValue is v as net/http's Header.Write writes it: newlines as spaces, trimmed.
func sanitizedValue(v string) string {
	return strings.Trim(headerNewlineToSpace.Replace(v), " \t")
}

var headerNewlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

func writeField(w *bufio.Writer, name string, value []byte) {
	_, _ = w.WriteString(name)
	_, _ = w.WriteString(": ")
	_, _ = w.Write(value)
	_, _ = w.WriteString("\r\n")
}

func writeFieldString(w *bufio.Writer, name, value string) {
	_, _ = w.WriteString(name)
	_, _ = w.WriteString(": ")
	_, _ = w.WriteString(value)
	_, _ = w.WriteString("\r\n")
}

func writeFieldBytes(w *bufio.Writer, name, value []byte) {
	_, _ = w.Write(name)
	_, _ = w.WriteString(": ")
	_, _ = w.Write(value)
	_, _ = w.WriteString("\r\n")
}

// answerHead is a tool's answer head read by readAnswerHead.
type answerHead struct {
	code int
	// length is the Content-Length (-1: none, for an answer without a body).
	length  int64
	close   bool // the tool closes the connection after this answer
	hasDate bool
	fields  []laneField // without the hop-by-hop ones
}

// readAnswerHead reads head, a whole answer head to a request of method, into a, or returns
// false if it is not one the fast lane reads itself: HTTP/1.1, a final status (200 to 599)
// whose text is visible ASCII, spaces and tabs; header lines as readLaneHead takes them; a
// body of one plain Content-Length, or none (HEAD, 204, 304); not a 401; no Transfer-Encoding,
// trailers, Location (the general path rewrites redirects) or Connection naming other headers.
func readAnswerHead(head []byte, method string, a *answerHead) bool {
	*a = answerHead{fields: a.fields[:0], length: -1}
	line, rest, ok := cutLine(head)
	if !ok || !a.readStatus(line) || a.code == http.StatusUnauthorized {
		// A 401 takes the general path, which answers a reverse client with the proxy's own
		// challenge (challengeForTheProxy), whether or not the tool sent one.
		return false
	}
	for {
		if line, rest, ok = cutLine(rest); !ok {
			return false
		}
		if len(line) == 0 {
			break
		}
		f, ok := cutField(line)
		if !ok || !a.take(f) {
			return false
		}
	}
	bodyless := method == http.MethodHead || a.code == http.StatusNoContent || a.code == http.StatusNotModified
	return len(rest) == 0 && (bodyless || a.length >= 0)
}

func (a *answerHead) readStatus(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte("HTTP/1.1 "))
	if !ok || len(rest) < 3 || len(rest) > 3 && rest[3] != ' ' {
		return false
	}
	for _, b := range rest[:3] {
		if b < '0' || b > '9' {
			return false
		}
		a.code = a.code*10 + int(b-'0')
	}
	return visibleOrBlank(rest[3:]) && a.code >= 200 && a.code < 600
}

// take files one header line of an answer; false for one the fast lane does not read itself.
func (a *answerHead) take(f laneField) bool {
	switch name := f.name; {
	case asciiEqual(name, "Content-Length"):
		n, ok := plainLength(f.value)
		if !ok || a.length >= 0 {
			return false
		}
		a.length = n
	case asciiEqual(name, "Connection"):
		closes, ok := connectionTokens(f.value)
		a.close = a.close || closes
		return ok
	case asciiEqual(name, "Transfer-Encoding"), asciiEqual(name, "Trailer"), asciiEqual(name, "Location"), asciiEqual(name, "WWW-Authenticate"),
		asciiEqual(name, "Link"):
		// The general path (cleanToolAnswer) rewrites Location, rid of a generator's query
		// parameters, and, for the reverse proxy's client, Link onto the proxy, and replaces a
		// challenge.
		return false
	case asciiEqual(name, "Date"):
		a.hasDate = true
	}
	for _, hop := range hopByHopHeaders {
		if asciiEqual(f.name, hop) {
			return true // not passed on
		}
	}
	for _, session := range toolSessionHeaders {
		if asciiEqual(f.name, session) {
			return true // not passed on (see dropToolSessions)
		}
	}
	if len(a.fields) == laneMaxFields {
		return false
	}
	a.fields = append(a.fields, f)
	return true
}

// plainLength reads a Content-Length of digits without leading zeros, below 10^18.
func plainLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 || len(v) > 1 && v[0] == '0' {
		return 0, false
	}
	var n int64
	for _, b := range v {
		if b < '0' || b > '9' {
			return 0, false
		}
		n = n*10 + int64(b-'0')
	}
	return n, true
}

// writeClientHead writes a's head to the client as the general path does (writeAnswer): the
// status with net/http's text, the tool's headers but the hop-by-hop ones, a Date if the tool
// sent none, and Connection: close when the connection ends after it.
func writeClientHead(w *bufio.Writer, a *answerHead, closing bool, scratch []byte) {
	writeStatusLine(w, a.code)
	for _, f := range a.fields {
		writeFieldBytes(w, f.name, f.value)
	}
	if !a.hasDate {
		writeField(w, "Date", appendDate(scratch[:0]))
	}
	if closing {
		_, _ = w.WriteString("Connection: close\r\n")
	}
	_, _ = w.WriteString("\r\n")
}

// appendDate appends the time now as an HTTP Date header's value.
func appendDate(b []byte) []byte { return time.Now().UTC().AppendFormat(b, http.TimeFormat) }
