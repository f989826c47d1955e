package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"connectrpc.com/connect"
)

// Error classes. Deep code wraps them with a message meant for the operator;
// connectError maps them to Connect codes, and nothing else does.
var (
	errInvalidArgument    = errors.New("invalid argument")
	errFailedPrecondition = errors.New("failed precondition")
)

// classError is an error whose message is shown to the operator as is and
// whose class decides the Connect code.
type classError struct {
	class error
	msg   string
}

func (e *classError) Error() string        { return e.msg }
func (e *classError) Is(target error) bool { return target == e.class }

func invalidArgument(format string, args ...any) error {
	return &classError{class: errInvalidArgument, msg: fmt.Sprintf(format, args...)}
}

func failedPrecondition(format string, args ...any) error {
	return &classError{class: errFailedPrecondition, msg: fmt.Sprintf(format, args...)}
}

// connectError is the one place where error classes become Connect codes.
func connectError(err error) error {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return err
	case errors.Is(err, errInvalidArgument):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, errFailedPrecondition):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		return connect.NewError(connect.CodeInternal, err)
	}
}

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
