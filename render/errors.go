package render

import (
	"errors"
	"fmt"
	"strings"
)

// InputError is a fault of the volume request (its attributes or parameters).
type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

func inputErrorf(format string, args ...any) error {
	return &InputError{msg: fmt.Sprintf(format, args...)}
}

// ClassError is a fault of a ConnectorClass (a template that does not parse or execute, or a
// file name that would escape the volume). It names the class, configuration and file.
type ClassError struct {
	Class, Configuration, File string
	Err                        error
}

func (e *ClassError) Error() string {
	return fmt.Sprintf("ConnectorClass %q configuration %q file %q: %v", e.Class, e.Configuration, e.File, e.Err)
}

func (e *ClassError) Unwrap() error { return e.Err }

// withoutToken is err with the Pod's token left out of its message: a template's failure goes
// to kubelet's FailedMount Event, and functions quote what they fail on (urlParse its URL,
// whose userinfo is the token: a JWT, whose characters a URL's userinfo keeps as they are).
func withoutToken(err error, token string) error {
	if token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), token, "[the Pod's token]"))
}
