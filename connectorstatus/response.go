package connectorstatus

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/cel-go/cel"

	"github.com/kube-connectors/connectors-csi/celexpr"
)

// responseRules evaluates probes' response.cel expressions. Variables, as Alauda documents
// them: response.statusCode, response.headers, response.bodyString and response.body (the body
// as JSON, null when it is not JSON); also the same names at the top level with bodyJSON for
// body, as Alauda's design notes write them.
type responseRules struct {
	programs *celexpr.Programs
}

// responseRulesCache names the compiled expressions in connectors_cache_entries.
const responseRulesCache = "probe_cel_programs"

func newResponseRules(cacheSize int) (*responseRules, error) {
	p, err := celexpr.New(responseRulesCache, cacheSize,
		cel.Variable("response", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("statusCode", cel.IntType),
		cel.Variable("headers", cel.MapType(cel.StringType, cel.ListType(cel.StringType))),
		cel.Variable("bodyString", cel.StringType),
		cel.Variable("body", cel.DynType),
		cel.Variable("bodyJSON", cel.DynType))
	if err != nil {
		return nil, err
	}
	return &responseRules{programs: p}, nil
}

// accepts runs expr over a response; it must yield a bool. The body is decoded as JSON only
// for an expression that may read it so (body, bodyJSON): decoded, a 1 MiB body takes tens of
// MiB, for each of the status workers.
func (r *responseRules) accepts(ctx context.Context, expr string, res *http.Response, body []byte) (bool, error) {
	var parsed any
	if strings.Contains(strings.ReplaceAll(expr, "bodyString", ""), "body") && json.Unmarshal(body, &parsed) != nil {
		parsed = nil
	}
	text := string(body)
	headers := make(map[string][]string, len(res.Header))
	for k, v := range res.Header {
		headers[k] = v
	}
	code := int64(res.StatusCode)
	vars := map[string]any{
		"response":   map[string]any{"statusCode": code, "headers": headers, "bodyString": text, "body": parsed},
		"statusCode": code, "headers": headers, "bodyString": text, "body": parsed, "bodyJSON": parsed,
	}
	out, err := r.programs.Eval(ctx, expr, vars)
	if err != nil {
		return false, fmt.Errorf("the probe's response.cel: %w", err)
	}
	ok, isBool := out.Value().(bool)
	if !isBool {
		return false, fmt.Errorf("the probe's response.cel %q does not yield a bool", expr)
	}
	return ok, nil
}
