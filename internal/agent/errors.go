package agent

import (
	"errors"
	"io/fs"
	"os"
)

// cause strips the host path from a *fs.PathError so that messages can name
// the pool path as the operator knows it instead of the directory it is
// served from.
func cause(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	if le, ok := errors.AsType[*os.LinkError](err); ok {
		return le.Err
	}
	return err
}
