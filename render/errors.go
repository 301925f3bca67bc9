package render

import "fmt"

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
