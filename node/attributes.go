package node

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-connectors/connectors-csi/access"
	"github.com/kube-connectors/connectors-csi/contract"
	"github.com/kube-connectors/connectors-csi/features"
	"github.com/kube-connectors/connectors-csi/node/records"
	"github.com/kube-connectors/connectors-csi/node/volumeattrs"
	"github.com/kube-connectors/connectors-csi/render"
)

// Volume attributes a Pod may set (SPEC §3.2).
const (
	attrConnectors          = volumeattrs.Connectors
	attrConnectorName       = volumeattrs.ConnectorName
	attrConnectorNamespace  = volumeattrs.ConnectorNamespace
	attrConfigurationNames  = "configuration.names"
	attrConfigurationParams = "configuration.params"
	attrTokenExpiration     = "token.expiration"
)

// Keys kubelet adds to the volume context (podInfoOnMount, tokenRequests).
const (
	keyPodName        = "csi.storage.k8s.io/pod.name"
	keyPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	keyPodUID         = "csi.storage.k8s.io/pod.uid"
	keyServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	keyEphemeral      = "csi.storage.k8s.io/ephemeral"
	keyTokens         = "csi.storage.k8s.io/serviceAccount.tokens"
)

var knownAttributes = []string{
	attrConnectors, attrConnectorName, attrConnectorNamespace, attrConfigurationNames,
	attrConfigurationParams, attrTokenExpiration,
	keyPodName, keyPodNamespace, keyPodUID, keyServiceAccount, keyEphemeral, keyTokens,
}

// volumeRequest is a validated NodePublishVolume request.
type volumeRequest struct {
	pod            records.Pod
	connectors     []types.NamespacedName
	configurations []string
	excluded       []string
	params         map[string]render.ParamValues
	token          string
}

// parseAttributes validates the volume context and secrets of a publish request. Every error
// names the offending attribute and value; none contains the token.
func parseAttributes(vc, secrets map[string]string, audience string) (*volumeRequest, error) {
	var unknown []string
	for k := range vc {
		if !slices.Contains(knownAttributes, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		// Named in the error, which kubelet logs and records at every retry: a few, each short.
		if len(unknown) > 5 {
			unknown = append(unknown[:5], fmt.Sprintf("and %d more", len(unknown)-5))
		}
		for i, k := range unknown {
			unknown[i] = contract.Short(k)
		}
		return nil, fmt.Errorf("unknown volume attributes %s (known: %s, %s, %s, %s, %s, %s)",
			strings.Join(unknown, ", "), attrConnectors, attrConnectorName, attrConnectorNamespace,
			attrConfigurationNames, attrConfigurationParams, attrTokenExpiration)
	}
	r := &volumeRequest{}
	var err error
	if r.pod, err = parsePod(vc); err != nil {
		return nil, err
	}
	if r.connectors, err = volumeattrs.ConnectorsOf(vc, r.pod.Namespace); err != nil {
		return nil, err
	}
	r.configurations, r.excluded = parseConfigurationNames(vc[attrConfigurationNames])
	if r.params, err = parseParams(vc[attrConfigurationParams]); err != nil {
		return nil, err
	}
	if r.token, err = parseToken(vc, secrets, audience); err != nil {
		return nil, err
	}
	if err := tokenOfPod(r.token, r.pod); err != nil {
		return nil, err
	}
	return r, nil
}

// tokenOfPod refuses a token kubelet gave for another Pod than the volume context names. With
// the CSIDriver's podInfoOnMount, kubelet writes the Pod's identity over whatever the Pod's
// spec put in its volume's attributes; without it (a changed chart), a Pod could name another
// namespace's Pod and ServiceAccount there, and be authorized and recorded as them. The token
// kubelet requested is the real Pod's. A token that names no Pod (not a JWT: a test's) is left
// to the proxy, which verifies every token it takes.
func tokenOfPod(token string, pod records.Pod) error {
	bound, ok := access.PodOfToken(token)
	if !ok {
		return nil
	}
	if bound.Namespace != pod.Namespace || bound.Name != pod.Name || bound.UID != pod.UID || bound.ServiceAccount != pod.ServiceAccount {
		return fmt.Errorf("the token kubelet gave is bound to Pod %s/%s (uid %s, ServiceAccount %s), not the volume's Pod %s/%s (uid %s, ServiceAccount %s): "+
			"the CSIDriver object must set podInfoOnMount: true", bound.Namespace, bound.Name, bound.UID, bound.ServiceAccount,
			pod.Namespace, pod.Name, pod.UID, pod.ServiceAccount)
	}
	return nil
}

func parsePod(vc map[string]string) (records.Pod, error) {
	p := records.Pod{
		Namespace:      vc[keyPodNamespace],
		Name:           vc[keyPodName],
		UID:            vc[keyPodUID],
		ServiceAccount: vc[keyServiceAccount],
	}
	for key, v := range map[string]string{keyPodNamespace: p.Namespace, keyPodName: p.Name, keyPodUID: p.UID, keyServiceAccount: p.ServiceAccount} {
		if v == "" {
			return p, fmt.Errorf("volume context lacks %s: the CSIDriver object must set podInfoOnMount: true", key)
		}
	}
	if e := vc[keyEphemeral]; e != "true" {
		return p, fmt.Errorf("volume context %s is %q: this driver serves only inline (ephemeral) volumes", keyEphemeral, e)
	}
	return p, nil
}

// parseConfigurationNames splits configuration.names into names to render and "!file"
// exclusions.
func parseConfigurationNames(v string) (names, excluded []string) {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
		case strings.HasPrefix(item, "!"):
			excluded = append(excluded, strings.TrimPrefix(item, "!"))
		default:
			names = append(names, item)
		}
	}
	return names, excluded
}

// maxParamsBytes bounds configuration.params: a template may repeat or escape a value (html
// escaping multiplies a quote by five), and the rendered volume is held in the node's memory.
const maxParamsBytes = 64 << 10

func parseParams(v string) (map[string]render.ParamValues, error) {
	if v == "" {
		return nil, nil
	}
	if len(v) > maxParamsBytes {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d a volume may pass to its templates", attrConfigurationParams, len(v), maxParamsBytes)
	}
	var out map[string]render.ParamValues
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		return nil, fmt.Errorf(`%s is not JSON of the form {"<configuration>": {"<param>": <value>}}: %v`, attrConfigurationParams, err)
	}
	return out, nil
}

// serviceAccountToken is one entry of kubelet's serviceAccount.tokens map.
type serviceAccountToken struct {
	Token               string `json:"token"`
	ExpirationTimestamp string `json:"expirationTimestamp"`
}

// parseToken takes the projected token for audience from the secrets (where kubelet puts it
// when the CSIDriver sets serviceAccountTokenInSecrets) or else from the volume context.
func parseToken(vc, secrets map[string]string, audience string) (string, error) {
	raw, ok := secrets[keyTokens]
	if !ok {
		raw, ok = vc[keyTokens]
	}
	if !ok || raw == "" {
		return "", fmt.Errorf("no %s in the request: the CSIDriver object must request a token for audience %q", keyTokens, audience)
	}
	var tokens map[string]serviceAccountToken
	if err := json.Unmarshal([]byte(raw), &tokens); err != nil {
		// The JSON error could quote part of the token, so it is not passed on.
		return "", fmt.Errorf("%s is not a JSON map of audience to {token, expirationTimestamp}", keyTokens)
	}
	t, ok := tokens[audience]
	if !ok || t.Token == "" {
		have := make([]string, 0, len(tokens))
		for a := range tokens {
			have = append(have, a)
		}
		slices.Sort(have)
		return "", fmt.Errorf("%s has no token for audience %q (audiences present: %s): add it to the CSIDriver's tokenRequests",
			keyTokens, audience, strings.Join(have, ", "))
	}
	return t.Token, nil
}

// checkMultiConnector refuses a volume that names several Connectors unless the feature flag
// enable-multi-connector is on (its default is off, as Alauda's).
func (s *Server) checkMultiConnector(vr *volumeRequest) error {
	if len(vr.connectors) < 2 || s.Flags.Flags().MultiConnector {
		return nil
	}
	return fmt.Errorf("volume attribute %s names %d Connectors: a volume may name one unless the feature flag %s is \"true\" in ConfigMap %s",
		attrConnectors, len(vr.connectors), features.KeyMultiConnector, features.ConfigMapName)
}
