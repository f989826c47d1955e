// Package api implements the public Connect services: each handler
// validates its request, calls the store or the node link, and converts the
// result. Errors are mapped to Connect codes in exactly one place,
// toConnect, by their errclass class.
package api

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
)

// invalidf returns an errclass.InvalidArgument error. Its text is shown to
// the caller as is, so it must say what to fix.
func invalidf(format string, args ...any) error {
	return errclass.New(errclass.InvalidArgument, format, args...)
}

// toConnect answers err with the Connect code of its class. Classed errors
// carry messages written for people; anything else is internal detail,
// logged here and replaced by a generic sentence. The public API carries
// no error details: the code and the message are the contract. A
// *connect.Error (one toConnect made already) is returned as is.
func toConnect(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if ce, ok := err.(*connect.Error); ok {
		return ce
	}
	switch c := errclass.Of(err); {
	case c != nil:
		ce := connect.NewError(c.Code(), err)
		if c == errclass.Unauthenticated {
			ce.Meta().Set("WWW-Authenticate", `Bearer realm="quarry"`)
		}
		return ce
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("the request was cancelled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("the request took too long; try again"))
	}
	log.ErrorContext(ctx, "internal error", "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error; the control plane's log has the details"))
}
