package api

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
)

// Front returns next behind an admission check that needs only the
// request's headers: a call of the public API whose bearer token or
// session cookie is missing or wrong, or whose client is locked out, is
// answered in its own protocol (Connect, gRPC, gRPC-Web) before a byte of
// its body is read or inflated. The audit log records it like any refusal,
// without a target (the body is unread). An admitted call carries its
// caller to the interceptor, which does not authenticate it again.
func (a *Auth) Front(next http.Handler, opts ...connect.HandlerOption) http.Handler {
	errs := connect.NewErrorWriter(opts...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proc := r.URL.Path
		rule, known := auth.RuleFor(proc)
		if !known || r.Method != http.MethodPost || !errs.IsSupported(r) {
			// Only RPCs over POST carry bodies; the rest (Connect GET
			// queries, pages, /auth/*, procedures missing from the
			// policy) are checked by their handlers.
			next.ServeHTTP(w, r)
			return
		}
		ctx, caller, err := a.admit(r.Context(), proc, r.Header, r.RemoteAddr)
		if err != nil && caller.TokenID != "" {
			// A known token with too small a role, or a session without
			// its CSRF header: the interceptor refuses it again, with the
			// request's target in the audit log.
			next.ServeHTTP(w, r)
			return
		}
		if err != nil {
			if rule.Mutates {
				a.audit(ctx, auditCall{proc: proc, rule: rule, caller: caller, peer: r.RemoteAddr, err: toConnect(ctx, a.Logger, err)})
			}
			errs.Write(w, r, toConnect(ctx, a.Logger, err))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(ctx, admittedKey{}, admission{proc: proc, caller: caller})))
	})
}

type admittedKey struct{}

// admission is the front's decision about one call, which the interceptor
// takes over.
type admission struct {
	proc   string
	caller Caller
}

// admitted returns the caller the front admitted for a call of proc.
func admitted(ctx context.Context, proc string) (Caller, bool) {
	a, ok := ctx.Value(admittedKey{}).(admission)
	return a.caller, ok && a.proc == proc
}
