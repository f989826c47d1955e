package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/metrics"
	"github.com/quarry-project/quarry/internal/store"
)

// GuardHTTP puts a plain HTTP endpoint (the tus uploads at /uploads/)
// behind the same checks as every RPC: the failure limit, a bearer token
// or a dashboard session with its CSRF header, and role. The caller is in
// the request's context (CallerFrom). Requests of the methods in audited,
// and every refusal, go to the audit log as procedure "<name> <METHOD>".
// OPTIONS (protocol discovery, CORS preflight) is served without a
// token: it says nothing but what the protocol is.
func (a *Auth) GuardHTTP(name string, role store.Role, audited []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		what := name + " " + r.Method
		client := clientOf(r.RemoteAddr)
		var c Caller
		err := a.exhaustedOrNil(client)
		if err == nil {
			c, err = a.authenticate(r.Context(), r.Header, client, true)
		}
		if err == nil && !auth.Allows(c.Role, role) {
			a.Metrics.AuthFailed(metrics.AuthRole)
			err = errclass.New(errclass.PermissionDenied, "%s needs the %s role; token %s has the %s role (an admin can create a token with quarry token create --role %s)",
				name, role, c.Actor(), c.Role, role)
		}
		if err != nil {
			err = toConnect(r.Context(), a.Logger, err)
			a.auditHTTP(r, what, c, r.URL.Path, err)
			if connect.CodeOf(err) == connect.CodeUnauthenticated {
				w.Header().Set("WWW-Authenticate", `Bearer realm="quarry"`)
			}
			http.Error(w, errMessage(err), httpStatus(connect.CodeOf(err)))
			return
		}
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
		for _, m := range audited {
			if m == r.Method {
				target := r.URL.Path
				if loc := rec.Header().Get("Location"); loc != "" {
					target = loc
				}
				var res error
				if rec.status >= 400 {
					res = connect.NewError(codeOf(rec.status), errors.New(strings.TrimSpace(rec.body)))
				}
				a.auditHTTP(r, what, c, target, res)
			}
		}
	})
}

func (a *Auth) exhaustedOrNil(client string) error {
	if !a.Limiter.Allow(client) {
		return a.exhausted(client)
	}
	return nil
}

// httpStatus is the HTTP status Connect answers code with.
func httpStatus(code connect.Code) int {
	switch code {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// codeOf is the Connect code closest to an HTTP error status, for the
// audit log.
func codeOf(status int) connect.Code {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusPreconditionFailed, 460:
		return connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusNotFound, http.StatusGone:
		return connect.CodeNotFound
	case http.StatusConflict:
		return connect.CodeAlreadyExists
	case http.StatusTooManyRequests, http.StatusInsufficientStorage:
		return connect.CodeResourceExhausted
	case http.StatusUnprocessableEntity:
		return connect.CodeFailedPrecondition
	case http.StatusServiceUnavailable:
		return connect.CodeUnavailable
	}
	return connect.CodeInternal
}

// statusWriter remembers the status and the start of an error body, for
// the audit log.
type statusWriter struct {
	http.ResponseWriter
	status int
	body   string
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status >= 400 && len(w.body) < maxAuditField {
		w.body += string(p[:min(len(p), maxAuditField-len(w.body))])
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
