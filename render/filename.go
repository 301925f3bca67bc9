package render

import (
	"fmt"
	"strings"
)

// maxFileNameLength bounds a rendered file's relative path.
const maxFileNameLength = 255

// ValidateFileName checks that a file name from a ConnectorClass stays inside the volume: a
// relative path of non-empty segments, none of which is "." or starts with ".." (the atomic
// writer reserves those names for its own data directories).
func ValidateFileName(name string) error {
	if name == "" {
		return fmt.Errorf("file name is empty")
	}
	if len(name) > maxFileNameLength {
		return fmt.Errorf("file name %q is longer than %d characters", name, maxFileNameLength)
	}
	if strings.HasPrefix(name, "/") {
		return fmt.Errorf("file name %q is absolute", name)
	}
	for _, seg := range strings.Split(name, "/") {
		switch {
		case seg == "", seg == ".":
			return fmt.Errorf("file name %q has an empty or '.' path segment", name)
		case strings.HasPrefix(seg, ".."):
			return fmt.Errorf("file name %q has a path segment starting with '..'", name)
		case strings.ContainsRune(seg, 0):
			return fmt.Errorf("file name %q contains a NUL byte", name)
		}
	}
	return nil
}
