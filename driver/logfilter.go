package driver

import (
	"fmt"

	"k8s.io/klog/v2"
)

// The filter is set as the package loads, before any goroutine logs: klog keeps it in a global
// that it reads without a lock on every log call (and tests run several drivers in one process).
func init() { klog.SetLogFilter(redactBodies{}) }

// redactBodies is a klog filter that drops the HTTP bodies client-go logs at -v=8 and above:
// they carry Secrets (the proxy CA key), TokenReviews (Pod tokens) and SubjectAccessReviews.
// klog offers the hook; no library ships this policy, so it is written here.
type redactBodies struct{}

func (redactBodies) Filter(args []any) []any { return args }

func (redactBodies) FilterF(format string, args []any) (string, []any) { return format, args }

func (redactBodies) FilterS(msg string, kv []any) (string, []any) {
	if msg != "Request Body" && msg != "Response Body" {
		return msg, kv
	}
	out := make([]any, len(kv))
	copy(out, kv)
	for i := 0; i+1 < len(out); i += 2 {
		if out[i] == "body" {
			out[i+1] = fmt.Sprintf("<redacted, %d bytes>", len(fmt.Sprint(out[i+1])))
		}
	}
	return msg, out
}
