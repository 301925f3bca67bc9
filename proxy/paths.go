package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"unicode"
)

// MaxDecodings bounds how many layers of percent-encoding CheckPath looks through.
const MaxDecodings = 3

// CheckPath refuses (400) a request path a tool could resolve outside where it seems to point,
// so that coverage decided on it holds at the tool (SPEC §4.7): a "." or ".." segment, also
// percent-encoded (once or several times), after a backslash or before a ";" parameter, and
// control characters or bad escapes. An acceptable path is forwarded as it came: encoded
// slashes (GitLab's project IDs) stay encoded.
func CheckPath(escaped string) error {
	p := escaped
	for layer := 0; ; layer++ {
		if hasDotSegment(p) {
			return refusef(http.StatusBadRequest, "path %q has a . or .. segment: it could leave the Connector's address", escaped)
		}
		if strings.IndexFunc(p, unicode.IsControl) >= 0 {
			return refusef(http.StatusBadRequest, "path %q has a control character", escaped)
		}
		if !strings.Contains(p, "%") {
			return nil
		}
		decoded, err := url.PathUnescape(p)
		if err != nil {
			return refusef(http.StatusBadRequest, "path %q is not validly percent-encoded", escaped)
		}
		if decoded == p {
			return nil
		}
		if layer == MaxDecodings {
			return refusef(http.StatusBadRequest, "path %q has too many layers of percent-encoding", escaped)
		}
		p = decoded
	}
}

// hasDotSegment reports whether a path has a "." or ".." segment, taking "\" as a separator
// too (some servers do) and ignoring a segment's ";" parameters (Tomcat resolves "..;x" as "..").
func hasDotSegment(p string) bool {
	for seg := range segments(p) {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
