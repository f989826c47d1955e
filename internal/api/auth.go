package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/metrics"
	"github.com/quarry-project/quarry/internal/store"
)

// Auth guards the public API. Its interceptor authenticates every call (a
// bearer token, or a dashboard session cookie with its CSRF header),
// authorizes it by the one policy table (auth.RuleFor), refuses clients that
// failed to authenticate too often, and writes every mutating call, allowed
// or refused, to the audit log. It also serves the dashboard's login
// endpoints (authsession.go).
type Auth struct {
	Store   store.Store
	Limiter *auth.Limiter
	Now     func() time.Time
	Logger  *slog.Logger
	// SessionTTL is how long a dashboard login lasts (default 12 h); never
	// longer than its token.
	SessionTTL time.Duration
	// Metrics counts refusals by reason; nil counts nothing.
	Metrics *metrics.Metrics
	// OIDC turns on single sign-on (nil: off).
	OIDC *OIDC
}

// Caller is who made a call.
type Caller struct {
	TokenID   string
	TokenName string
	Role      store.Role
	// Session is set when a dashboard session cookie authenticated the call.
	Session bool
	// System names the control plane's own code that made the call in
	// process (WithSystemCaller), without a token.
	System string
}

// Actor names the caller in the audit log: "ci (3f2a9c1b7d4e)", or
// "system (dev mode)".
func (c Caller) Actor() string {
	switch {
	case c.System != "":
		return "system (" + c.System + ")"
	case c.TokenID == "":
		return ""
	case c.TokenName == "":
		return c.TokenID
	}
	return c.TokenName + " (" + c.TokenID + ")"
}

type callerKey struct{}

type systemKey struct{}

// WithSystemCaller marks the calls made with ctx as the control plane's own
// code named name ("dev mode"): they are allowed as an admin's and audited
// as "system (name)". Only code in the control plane's process can set a
// context value, so nothing that arrives over the network can claim it.
func WithSystemCaller(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, systemKey{}, name)
}

// CallerFrom returns the authenticated caller of the call ctx belongs to.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Interceptor returns the interceptor that guards every public handler. It
// must run outside the handlers' panic recovery, so install it with
// connect.WithInterceptors before connect.WithRecover.
func (a *Auth) Interceptor() connect.Interceptor { return guard{a} }

type guard struct{ a *Auth }

func (g guard) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (resp connect.AnyResponse, err error) {
		ctx = withAuditNote(ctx)
		proc, peer := req.Spec().Procedure, req.Peer().Addr
		var caller Caller
		if rule, known := auth.RuleFor(proc); !known || rule.Mutates {
			// Deferred so that neither an error nor a panic skips the entry.
			defer func() {
				p := recover()
				var out any
				if resp != nil {
					out = resp.Any()
				}
				g.a.audit(ctx, auditCall{proc: proc, rule: rule, caller: caller, peer: peer,
					req: req.Any(), resp: out, err: err, panicked: p != nil})
				if p != nil {
					panic(p)
				}
			}()
		}
		ctx, caller, err = g.a.admit(ctx, proc, req.Header(), peer)
		if err != nil {
			err = toConnect(ctx, g.a.Logger, err)
			return nil, err
		}
		resp, err = next(ctx, req)
		g.a.countPublicFailure(proc, peer, err)
		return resp, err
	}
}

func (g guard) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (g guard) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) (err error) {
		proc, peer := conn.Spec().Procedure, conn.Peer().Addr
		var caller Caller
		if rule, known := auth.RuleFor(proc); !known || rule.Mutates {
			defer func() {
				p := recover()
				g.a.audit(ctx, auditCall{proc: proc, rule: rule, caller: caller, peer: peer, err: err, panicked: p != nil})
				if p != nil {
					panic(p)
				}
			}()
		}
		ctx, caller, err = g.a.admit(ctx, proc, conn.RequestHeader(), peer)
		if err != nil {
			err = toConnect(ctx, g.a.Logger, err)
			return err
		}
		if caller.TokenID != "" {
			// A stream outlives the check that admitted it: its handler
			// asks again (StillAuthenticated) while it runs.
			h := conn.RequestHeader()
			ctx = context.WithValue(ctx, recheckKey{}, func(ctx context.Context) error {
				_, err := g.a.authenticate(ctx, h, clientOf(peer), false)
				return err
			})
		}
		err = next(ctx, conn)
		g.a.countPublicFailure(proc, peer, err)
		return err
	}
}

type recheckKey struct{}

// StillAuthenticated checks again, for a long-lived stream, the token or
// dashboard session that opened it: an error (unauthenticated) once it was
// revoked or has expired, nil for callers without one (the control plane's
// own code).
func StillAuthenticated(ctx context.Context) error {
	if recheck, ok := ctx.Value(recheckKey{}).(func(context.Context) error); ok {
		return recheck(ctx)
	}
	return nil
}

// admit decides whether a call of proc may proceed and returns the context
// that carries its caller. The caller is returned even when refused, for
// the audit log. Its errors are classed; the interceptor answers them with
// toConnect.
func (a *Auth) admit(ctx context.Context, proc string, h http.Header, peer string) (context.Context, Caller, error) {
	rule, known := auth.RuleFor(proc)
	if name, ok := ctx.Value(systemKey{}).(string); ok && known {
		c := Caller{System: name, Role: store.RoleAdmin}
		return context.WithValue(ctx, callerKey{}, c), c, nil
	}
	if c, ok := admitted(ctx, proc); ok {
		return ctx, c, nil // the front put the caller in ctx
	}
	client := clientOf(peer)
	if !a.Limiter.Allow(client) {
		return ctx, Caller{}, a.exhausted(client)
	}
	if known && rule.Public {
		return ctx, Caller{}, nil
	}
	c, err := a.authenticate(ctx, h, client, true)
	if err != nil {
		return ctx, c, err
	}
	if !known {
		a.Metrics.AuthFailed(metrics.AuthNotInPolicy)
		return ctx, c, errclass.New(errclass.PermissionDenied,
			"%s is not in the control plane's access policy, so no token may call it", strings.TrimPrefix(proc, "/"))
	}
	if !auth.Allows(c.Role, rule.Role) {
		a.Metrics.AuthFailed(metrics.AuthRole)
		return ctx, c, errclass.New(errclass.PermissionDenied,
			"%s needs the %s role; token %s has the %s role (an admin can create a token with quarry token create --role %s)",
			strings.TrimPrefix(proc, "/"), rule.Role, c.Actor(), c.Role, rule.Role)
	}
	return context.WithValue(ctx, callerKey{}, c), c, nil
}

// countPublicFailure counts a refused credential of a public procedure
// (Enroll's join token) against the client, like a bad bearer token.
func (a *Auth) countPublicFailure(proc, peer string, err error) {
	if rule, known := auth.RuleFor(proc); known && rule.Public && connect.CodeOf(err) == connect.CodeUnauthenticated {
		a.fail(clientOf(peer), metrics.AuthJoinTokenRefused)
	}
}

// fail counts a failed authentication by client, for the limit and by
// reason, and says so in the log when that locks the client out.
func (a *Auth) fail(client, reason string) {
	a.Metrics.AuthFailed(reason)
	if a.Limiter.Fail(client) {
		a.Logger.Warn("too many failed authentications; refusing the client's calls for now",
			"client", client, "window", a.Limiter.Window())
	}
}

// errNoToken answers a call without credentials.
var errNoToken = errors.New("this call needs a token: send \"Authorization: Bearer <token>\"; " +
	"the first admin token is in <data-dir>/admin.token on the control plane's host, and an admin creates more with quarry token create")

// authenticate finds the caller from a bearer token or, failing that, a
// session cookie; csrf demands the session's CSRF header. Only wrong bearer
// tokens count against the client: session cookies are unguessable and
// end legitimately.
func (a *Auth) authenticate(ctx context.Context, h http.Header, client string, csrf bool) (Caller, error) {
	if v := h.Get("Authorization"); v != "" {
		scheme, token, _ := strings.Cut(v, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			a.fail(client, metrics.AuthMalformed)
			return Caller{}, unauthenticated(errors.New(`the Authorization header must read "Bearer <token>"`))
		}
		t, err := auth.Lookup(ctx, a.Store, token, store.TokenAPI, a.Now())
		if errors.Is(err, auth.ErrInvalid) {
			a.fail(client, metrics.AuthInvalidToken)
			return Caller{}, unauthenticated(fmt.Errorf("%w; check the token, or ask an admin for a new one (quarry token create)", err))
		}
		if err != nil {
			return Caller{}, err
		}
		a.touch(ctx, t)
		return Caller{TokenID: t.ID, TokenName: t.Name, Role: t.Role}, nil
	}
	if cookie := sessionCookie(h); cookie != "" {
		c, s, err := a.fromSession(ctx, cookie)
		if err != nil {
			a.Metrics.AuthFailed(metrics.AuthSessionEnded)
			return c, err
		}
		if csrf && !auth.CSRFMatches(s, h.Get(auth.CSRFHeader)) {
			a.Metrics.AuthFailed(metrics.AuthCSRF)
			return c, errclass.New(errclass.PermissionDenied,
				"a call authenticated by a session cookie must carry the %s header that /auth/login and /auth/session return", auth.CSRFHeader)
		}
		return c, nil
	}
	a.Metrics.AuthFailed(metrics.AuthNoToken)
	return Caller{}, unauthenticated(errNoToken)
}

// fromSession returns the caller a session cookie stands for, checking the
// session and its token as they are now.
func (a *Auth) fromSession(ctx context.Context, cookie string) (Caller, store.Session, error) {
	now := a.Now()
	ended := unauthenticated(errors.New("the dashboard session has ended; log in again"))
	s, err := a.Store.GetSession(ctx, auth.SessionID(cookie))
	if errors.Is(err, store.ErrNotFound) || err == nil && !now.Before(s.ExpiresAt) {
		return Caller{}, s, ended
	}
	if err != nil {
		return Caller{}, s, err
	}
	t, err := a.Store.GetToken(ctx, s.TokenID)
	if errors.Is(err, store.ErrNotFound) {
		return Caller{}, s, ended
	}
	if err != nil {
		return Caller{}, s, err
	}
	c := Caller{TokenID: t.ID, TokenName: t.Name, Role: t.Role, Session: true}
	if err := auth.Usable(t, now); err != nil {
		return c, s, unauthenticated(fmt.Errorf("%w; log in again with a valid token", err))
	}
	if t.Kind != store.TokenAPI && t.Kind != store.TokenSSO {
		return c, s, ended
	}
	return c, s, nil
}

// touch records that t was used, at most once a minute per token: the
// last-used time people see does not need a database write per call.
func (a *Auth) touch(ctx context.Context, t store.Token) {
	now := a.Now()
	if !t.LastUsedAt.IsZero() && now.Sub(t.LastUsedAt) < time.Minute {
		return
	}
	if _, err := a.Store.UseToken(ctx, t.ID, now); err != nil {
		a.Logger.DebugContext(ctx, "recording a token use", "token", t.ID, "err", err)
	}
}

func (a *Auth) exhausted(client string) error {
	a.Metrics.AuthFailed(metrics.AuthRateLimited)
	wait := a.Limiter.Window().String()
	if a.Limiter.Window() == time.Minute {
		wait = "a minute"
	}
	return errclass.New(errclass.RateLimited, "too many failed authentications from %s; wait %s", client, wait)
}

// unauthenticated classes err, whose message says what to do, as
// errclass.Unauthenticated.
func unauthenticated(err error) error {
	return errclass.Wrap(errclass.Unauthenticated, err, "%v", err)
}

func sessionCookie(h http.Header) string {
	for _, line := range h.Values("Cookie") {
		cookies, err := http.ParseCookie(line)
		if err != nil {
			continue
		}
		for _, c := range cookies {
			if c.Name == auth.SessionCookie && c.Value != "" {
				return c.Value
			}
		}
	}
	return ""
}

// clientOf is the client a remote address counts as for the failure
// limit: its IP, or the /64 of an IPv6 address, which one host usually
// holds whole.
func clientOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
