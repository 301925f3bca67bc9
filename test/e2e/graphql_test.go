package e2e

import (
	"net/http"
	"testing"

	"github.com/kube-connectors/connectors-csi/apis/connectors/v1alpha1"
)

// TestTenancyGraphQLRequestsCannotTakeACredential: a Pod allowed to use a Connector to a GitLab
// cannot have the proxy send a GraphQL request that mints a credential or answers one (the
// node's --proxy-denied-graphql-fields, by default GitLab's runner, token and trigger fields):
// however the request carries its document (a JSON body, JSON escapes, an alias, a batch, a
// repeated key, a form, the query string, a body of another type, under a context path, with
// any extension, GitLab's other GraphQL endpoint), it is refused (403) through the reverse proxy (after the connection's
// route is remembered), the forward proxy, a CONNECT tunnel and the Connectors API's
// pass-through, and none reaches the tool (nor one naming a field its class denies, refused
// naming the class's list); one the proxy cannot read (a multipart body) is
// refused naming why; an ordinary query along the same routes is served, its body whole.
func TestTenancyGraphQLRequestsCannotTakeACredential(t *testing.T) {
	ways := startPodWays(t, &v1alpha1.ProxySpec{DeniedGraphQLFields: []string{"projectSecretCreate"}},
		"enable-connector-apis-write-passthrough") // the pass-through's POSTs
	const json, field = "application/json", "--proxy-denied-graphql-fields"
	allowed := toolRequest{method: "POST", path: "/api/graphql", contentType: json,
		body: `{"query":"query { project(fullPath: \"g/p\") { issues { nodes { title } } } }"}`}
	ways.expectEach(t, allowed, []toolRequest{
		{method: "POST", path: "/api/graphql", contentType: json, refusal: field,
			body: `{"query":"mutation { runnerCreate(input: {runnerType: INSTANCE_TYPE}) { runner { ephemeralAuthenticationToken } } }"}`},
		{method: "POST", path: "/api/graphql", contentType: json, refusal: field,
			body: `{"query":"mutation { r: \u0072unnerCreate(input: {}) { errors } }"}`},
		{method: "POST", path: "/api/graphql", contentType: json, refusal: field,
			body: `[{"query":"{ currentUser { username } }"},{"query":"mutation { personalAccessTokenCreate(input: {name: \"x\"}) { token } }"}]`},
		{method: "POST", path: "/api/graphql", contentType: json, refusal: field,
			body: `{"query":"mutation { clusterAgentTokenCreate(input: {clusterAgentId: \"1\"}) { secret } }","query":"{ currentUser { username } }"}`},
		{method: "POST", path: "/api/graphql", refusal: field,
			body: `query=mutation+%7B+pipelineTriggerCreate(input:{projectPath:%22g/p%22})+%7B+pipelineTrigger+%7B+token+%7D+%7D+%7D`},
		{method: "GET", path: "/api/graphql?query=%7Bproject(fullPath:%22g/p%22)%7BpipelineTriggers%7Bnodes%7Btoken%7D%7D%7D%7D", refusal: field},
		{method: "POST", path: "/gitlab/API/graphql.json", contentType: json, refusal: field,
			body: `{"query":"mutation { runnersRegistrationTokenReset(input: {type: INSTANCE_TYPE}) { token } }"}`},
		{method: "POST", path: "/api/glql", contentType: json, refusal: field,
			body: `{"query":"mutation { runnerCreate(input: {runnerType: INSTANCE_TYPE}) { errors } }"}`},
		{method: "POST", path: "/api/graphql.csv", contentType: json, refusal: field,
			body: `{"query":"mutation { httpIntegrationResetToken(input: {id: \"1\"}) { integration { token } } }"}`},
		{method: "POST", path: "/api/graphql", contentType: json, refusal: "spec.proxy.deniedGraphQLFields",
			body: `{"query":"mutation { projectSecretCreate(input: {name: \"x\"}) { errors } }"}`},
		{method: "POST", path: "/api/graphql", contentType: "text/plain", refusal: field,
			body: `mutation { personalAccessTokenRotate(input: {id: "gid://gitlab/PersonalAccessToken/1"}) { token } }`},
		{method: "POST", path: "/api/graphql", contentType: "multipart/form-data; boundary=x", status: http.StatusUnsupportedMediaType,
			refusal: "cannot read this one", body: "--x\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--x--\r\n"},
	})
}
