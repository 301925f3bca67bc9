package connectorsapi

import (
	"net/http"
	"net/textproto"
	"strings"
)

// The Connectors API is called by people, through a console and its gateway, about Connectors
// that anyone with get may read, and whose address the Connector's author chose: a tenant's
// Connector may point at a server of the tenant's. So what identifies the caller to the console
// never reaches the tool, and what the tool answers cannot act on the console's origin.

// callerHeaders identify the caller to the console or its gateway: its session, and what
// authenticating gateways add (oauth2-proxy, Kubernetes' front proxy, impersonation, AWS's
// load balancers, Google's IAP, Cloudflare Access, Authelia, Kong). Some are tokens the caller's
// identity provider would take from whoever holds them (an ALB's access token).
var callerHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie",
	"X-Forwarded-Access-Token", "X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Groups", "X-Forwarded-Preferred-Username",
	"X-Remote-User", "X-Remote-Group", "Impersonate-User", "Impersonate-Group", "Impersonate-Uid",
	"X-Amzn-Oidc-Accesstoken", "X-Amzn-Oidc-Data", "X-Amzn-Oidc-Identity",
	"X-Goog-Iap-Jwt-Assertion", "X-Goog-Authenticated-User-Email", "X-Goog-Authenticated-User-Id",
	"Cf-Access-Jwt-Assertion", "Cf-Access-Authenticated-User-Email",
	"Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name", "X-Id-Token", "X-Access-Token",
	"X-Userinfo", "X-Credential-Identifier", "X-Anonymous-Consumer"}

// callerHeaderPrefixes begin further such headers (extras; oauth2-proxy's and Gatekeeper's
// X-Auth-*, Pomerium's, Azure App Service's, Authentik's, Vouch's, Kong's consumer headers).
var callerHeaderPrefixes = []string{"X-Remote-Extra-", "Impersonate-Extra-", "X-Auth-", "X-Pomerium-",
	"X-Ms-Token-", "X-Ms-Client-Principal", "X-Authentik-", "X-Vouch-", "X-Consumer-"}

// withoutCaller returns a copy of h without the headers that identify the caller.
func withoutCaller(h http.Header) http.Header {
	out := h.Clone()
	for _, name := range callerHeaders {
		delete(out, textproto.CanonicalMIMEHeaderKey(name))
	}
	for name := range out {
		for _, prefix := range callerHeaderPrefixes {
			if strings.HasPrefix(name, prefix) {
				delete(out, name)
			}
		}
	}
	return out
}

// confineAnswer keeps a tool's answer from acting on the API's origin: no cookie is set there,
// no page it serves runs as the console's (a sandbox, and no guessing at types), no other
// origin is let read it (a tool's CORS headers: behind a gateway that turns the console's
// cookie into a token, a tool echoing any Origin with credentials would let any site read
// what a shared Connector's credential reads), and it asks for no credential (a tool's
// challenge is for its own credential, which the API injects; one would have a client send
// the caller's, or prompt for a password on the API's origin).
func confineAnswer(h http.Header) {
	h.Del("Set-Cookie")
	h.Del("Set-Cookie2")
	h.Del("WWW-Authenticate")
	for name := range h {
		if strings.HasPrefix(name, "Access-Control-") || name == "Timing-Allow-Origin" {
			delete(h, name)
		}
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox")
}
