// Package api implements the public Connect services: each handler
// validates its request, calls the store or the node link, and converts the
// result. Errors are mapped to Connect codes in exactly one place, toConnect.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
)

// invalid classes a request error as invalid_argument. Its text is shown to
// the caller as is, so it must say what to fix.
type invalid struct{ msg string }

func (e *invalid) Error() string { return e.msg }

func invalidf(format string, args ...any) error {
	return &invalid{fmt.Sprintf(format, args...)}
}

// toConnect maps an error class to its Connect code. Class errors carry
// messages written for people; anything else is internal detail, logged
// here and replaced by a generic sentence.
func toConnect(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	var inv *invalid
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &inv):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, store.ErrInUse), errors.Is(err, placement.ErrNoNode):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, ErrUnavailable):
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("the request was cancelled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("the request took too long; try again"))
	}
	log.ErrorContext(ctx, "internal error", "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error; the control plane's log has the details"))
}

// classed is an error whose message is written for people and whose class
// (a store or placement sentinel) decides the Connect code.
type classed struct {
	msg   string
	class error
}

func (e *classed) Error() string { return e.msg }
func (e *classed) Unwrap() error { return e.class }

func classf(class error, format string, args ...any) error {
	return &classed{fmt.Sprintf(format, args...), class}
}

// ErrUnavailable classes errors where no node could do the work now (all
// candidates failed); trying again later may succeed.
var ErrUnavailable = errors.New("unavailable")

// Unavailable returns an ErrUnavailable-classed error with a message for
// people.
func Unavailable(format string, args ...any) error { return classf(ErrUnavailable, format, args...) }
