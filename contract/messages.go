package contract

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// maxReported bounds the errors one message names: a volume's errors are logged and recorded
// as an Event by kubelet at every retry, a Connector's answered by admission, and a tenant
// chooses how many there are (thousands of undeclared params fit in 64 KiB). apimachinery's
// aggregate also joins its messages by repeated concatenation, quadratic in their count: a
// few thousand errors cost seconds of CPU and gigabytes of allocation per message.
const maxReported = 5

// bounded is the first maxReported of errs, the last saying how many more there are.
func bounded(errs field.ErrorList) field.ErrorList {
	if len(errs) <= maxReported {
		return errs
	}
	last := *errs[maxReported-1]
	last.Detail += fmt.Sprintf("; and %d more errors", len(errs)-maxReported)
	return append(errs[:maxReported-1:maxReported-1], &last)
}

// maxShown bounds how much of a value a tenant gave (a name, a key) a message quotes.
const maxShown = 64

// Short is s as messages quote it: at most maxShown bytes of it, then "…".
func Short(s string) string {
	if len(s) <= maxShown {
		return s
	}
	return strings.ToValidUTF8(s[:maxShown], "") + "…"
}
