package connectorsapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TestToolErrorsQuoteNothingOfTheTools: the libraries' errors quote what a tool or a registry's
// token service answered (a refresh token, a token under a key go-containerregistry does not
// know, a body); the API's caller, who may use the Connector but not hold its credential, is
// told the status and what went wrong, never that text.
func TestToolErrorsQuoteNothingOfTheTools(t *testing.T) {
	const secret = "REGISTRY-BEARER-SECRET"
	for name, err := range map[string]error{
		"a token service's odd answer": fmt.Errorf("no token in bearer response:\n{\"data\":{\"token\":%q}}", secret),
		"a registry's 500":             &transport.Error{StatusCode: http.StatusInternalServerError, Errors: []transport.Diagnostic{{Message: secret}}},
		"wrapped in the URL's error":   &url.Error{Op: "Get", URL: "https://registry/token", Err: errors.New("no token in bearer response: " + secret)},
	} {
		got := registryError(err)
		if strings.Contains(got.Error(), secret) {
			t.Errorf("%s: %q", name, got)
		}
	}
}
