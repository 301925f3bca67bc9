package connectorstatus

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
	"github.com/kube-connectors/connectors-csi/connectorsapi"
	"github.com/kube-connectors/connectors-csi/proxy/egress"
)

// ReasonAPINotResolved (False): the probe goes through the class's API, whose address the
// class status does not hold yet (APIReady is not True).
const ReasonAPINotResolved = "APINotResolved"

// probeAPI sends a probe through the class's API service (probe.api, connectorclass.mdx):
// GET {status.api.address.url}{path} with the Connector's X-Plugin-* headers, as the
// Connectors API sends them, its credential included for an auth probe (sec non-nil). A 2xx
// answer passes; anything else fails, 401 and 403 meaning a rejected credential. The request
// follows no redirect (the credential travels in the headers) and the answer's body is not
// read into the status (a plugin may echo what it was sent).
func (r *Reconciler) probeAPI(ctx context.Context, probes *http.Client, c *v1alpha1.Connector, class *v1alpha1.ConnectorClass, p *v1alpha1.APIProbe, cred *credential) (probeResult, error) {
	addr := connectorsapi.APIAddress(class)
	if addr == "" {
		return probeResult{}, apiNotResolvedError{class: class.Name}
	}
	u, err := url.Parse(strings.TrimSuffix(addr, "/") + "/" + strings.TrimPrefix(p.Path, "/"))
	if err != nil {
		return probeResult{}, invalid(fmt.Errorf("probe api.path %q: %v", p.Path, err))
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return probeResult{}, invalid(err)
	}
	req.Header.Set("User-Agent", ProbeUserAgent)
	req.Header.Set(egress.HopHeader, "1")
	var secretType string
	var data map[string][]byte
	if cred != nil {
		secretType, data = cred.secretType, cred.secret.Data
	}
	connectorsapi.SetPluginHeaders(req.Header, c.Spec.Address, secretType, data)
	res, err := probes.Do(req)
	if err != nil {
		return probeResult{}, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxProbeBody))
	ok := res.StatusCode >= 200 && res.StatusCode < 300
	return probeResult{ok: ok, code: res.StatusCode, why: fmt.Sprintf("the ConnectorClass's API answered %d", res.StatusCode),
		notAuth: res.StatusCode != http.StatusUnauthorized && res.StatusCode != http.StatusForbidden}, nil
}

// apiNotResolvedError is a probe through a class API whose address is not known.
type apiNotResolvedError struct{ class string }

func (e apiNotResolvedError) Error() string {
	return fmt.Sprintf("the probe goes through the API of ConnectorClass %q, whose address is not resolved (see its APIReady condition)", e.class)
}
