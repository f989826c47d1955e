package api

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/httpguard"
	"github.com/quarry-project/quarry/internal/metrics"
	"github.com/quarry-project/quarry/internal/store"
)

// The dashboard logs in with a token and then holds a session cookie:
//
//	POST /auth/login   {"token": "qk_..."} → session cookie + sessionInfo
//	GET  /auth/session → sessionInfo of the cookie's session
//	POST /auth/logout  → ends the cookie's session (needs X-CSRF-Token)
//
// The cookie is HttpOnly and SameSite=Strict (Secure over TLS); only its
// hash is stored. Every API call it authenticates must carry the session's
// CSRF token in X-CSRF-Token.

const (
	defaultSessionTTL = 12 * time.Hour
	maxLoginBytes     = 16 << 10
)

// sessionInfo is what the dashboard learns of its session.
type sessionInfo struct {
	Role      store.Role `json:"role"`
	CSRFToken string     `json:"csrfToken"`
	TokenID   string     `json:"tokenId"`
	TokenName string     `json:"tokenName,omitempty"`
	ExpiresAt time.Time  `json:"expiresAt"`
}

// Routes serves the login endpoints on mux.
func (a *Auth) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /auth/login", a.login)
	mux.HandleFunc("POST /auth/logout", a.logout)
	mux.HandleFunc("GET /auth/session", a.session)
	mux.HandleFunc("GET /auth/config", a.ssoConfig)
	if a.OIDC != nil {
		mux.HandleFunc("GET /auth/oidc/login", a.oidcLogin)
		mux.HandleFunc("GET "+oidcCallback, a.oidcCallback)
	}
}

func (a *Auth) login(w http.ResponseWriter, r *http.Request) {
	var caller Caller
	var target string
	err := func() error {
		// A JSON content type cannot come from a cross-site form, so nobody
		// can log a browser in with their own token behind its back.
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			return invalidf(`send the token as JSON with Content-Type: application/json: {"token": "..."}`)
		}
		client := clientOf(r.RemoteAddr)
		if !a.Limiter.Allow(client) {
			return a.exhausted(client)
		}
		var body struct {
			Token string `json:"token"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxLoginBytes)).Decode(&body); err != nil {
			return invalidf(`the body must be JSON {"token": "..."}: %v`, err)
		}
		if _, id, _, err := auth.Parse(body.Token); err == nil {
			target = id
		}
		now := a.Now()
		t, err := auth.Lookup(r.Context(), a.Store, body.Token, store.TokenAPI, now)
		if errors.Is(err, auth.ErrInvalid) {
			a.fail(client, metrics.AuthInvalidToken)
			return unauthenticated(err)
		}
		if err != nil {
			return err
		}
		caller = Caller{TokenID: t.ID, TokenName: t.Name, Role: t.Role, Session: true}
		a.touch(r.Context(), t)

		s, expires, err := a.startSession(w, r, t, now)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, sessionInfo{Role: t.Role, CSRFToken: s.CSRF, TokenID: t.ID, TokenName: t.Name, ExpiresAt: expires})
		return nil
	}()
	err = toConnect(r.Context(), a.Logger, err)
	a.auditHTTP(r, "POST /auth/login", caller, target, err)
	if err != nil {
		writeError(w, err)
	}
}

func (a *Auth) logout(w http.ResponseWriter, r *http.Request) {
	cookie := sessionCookie(r.Header)
	if cookie == "" {
		clearCookie(w, r)
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	var caller Caller
	err := func() error {
		s, err := a.Store.GetSession(r.Context(), auth.SessionID(cookie))
		if errors.Is(err, store.ErrNotFound) {
			return nil // already ended: logging out again is fine
		}
		if err != nil {
			return err
		}
		if t, err := a.Store.GetToken(r.Context(), s.TokenID); err == nil {
			caller = Caller{TokenID: t.ID, TokenName: t.Name, Role: t.Role, Session: true}
		}
		if !auth.CSRFMatches(s, r.Header.Get(auth.CSRFHeader)) {
			return errclass.New(errclass.PermissionDenied, "logging out needs the session's %s header", auth.CSRFHeader)
		}
		return a.Store.DeleteSession(r.Context(), s.ID)
	}()
	err = toConnect(r.Context(), a.Logger, err)
	a.auditHTTP(r, "POST /auth/logout", caller, caller.TokenID, err)
	if err != nil {
		writeError(w, err)
		return
	}
	clearCookie(w, r)
	writeJSON(w, http.StatusOK, struct{}{})
}

func (a *Auth) session(w http.ResponseWriter, r *http.Request) {
	cookie := sessionCookie(r.Header)
	if cookie == "" {
		writeError(w, toConnect(r.Context(), a.Logger, unauthenticated(errors.New("not logged in: POST /auth/login with a token"))))
		return
	}
	c, s, err := a.fromSession(r.Context(), cookie)
	if err != nil {
		writeError(w, toConnect(r.Context(), a.Logger, err))
		return
	}
	writeJSON(w, http.StatusOK, sessionInfo{Role: c.Role, CSRFToken: s.CSRF, TokenID: c.TokenID, TokenName: c.TokenName, ExpiresAt: s.ExpiresAt})
}

// sessionExpiry is when a session made now for t ends: after the session
// TTL, never past t's expiry.
func (a *Auth) sessionExpiry(t store.Token, now time.Time) time.Time {
	ttl := a.SessionTTL
	if ttl <= 0 {
		ttl = defaultSessionTTL
	}
	expires := now.Add(ttl)
	if !t.ExpiresAt.IsZero() && t.ExpiresAt.Before(expires) {
		expires = t.ExpiresAt
	}
	return expires
}

// startSession makes a dashboard session for t and sets its cookie on w:
// the one way both the token login and single sign-on log a browser in.
func (a *Auth) startSession(w http.ResponseWriter, r *http.Request, t store.Token, now time.Time) (store.Session, time.Time, error) {
	expires := a.sessionExpiry(t, now)
	if err := a.Store.DeleteExpiredSessions(r.Context(), now); err != nil {
		a.Logger.WarnContext(r.Context(), "deleting expired sessions", "err", err)
	}
	s, cookie := auth.NewSession(t.ID, now, expires)
	if err := a.Store.CreateSession(r.Context(), s); err != nil {
		return store.Session{}, time.Time{}, err
	}
	http.SetCookie(w, &http.Cookie{
		Name:     auth.SessionCookie,
		Value:    cookie,
		Path:     "/",
		Expires:  expires,
		MaxAge:   max(1, int(expires.Sub(now)/time.Second)),
		HttpOnly: true,
		Secure:   httpguard.IsHTTPS(r),
		SameSite: http.SameSiteStrictMode,
	})
	return s, expires, nil
}

// auditHTTP records a login endpoint call like a mutating RPC.
func (a *Auth) auditHTTP(r *http.Request, what string, c Caller, target string, err error) {
	e := store.AuditEntry{
		Time:       a.Now(),
		Actor:      c.Actor(),
		Role:       c.Role,
		Procedure:  what,
		Target:     clip(target),
		Result:     "ok",
		RemoteAddr: r.RemoteAddr,
	}
	if err != nil {
		e.Result, e.Message = connect.CodeOf(err).String(), clip(errMessage(err))
	}
	a.write(context.WithoutCancel(r.Context()), e)
}

func clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: auth.SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: httpguard.IsHTTPS(r), SameSite: http.SameSiteStrictMode})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError answers like a Connect error: {"code": ..., "message": ...}
// with the HTTP status Connect uses for the code.
func writeError(w http.ResponseWriter, err error) {
	code := connect.CodeOf(err)
	status := map[connect.Code]int{
		connect.CodeInvalidArgument:    http.StatusBadRequest,
		connect.CodeUnauthenticated:    http.StatusUnauthorized,
		connect.CodePermissionDenied:   http.StatusForbidden,
		connect.CodeResourceExhausted:  http.StatusTooManyRequests,
		connect.CodeNotFound:           http.StatusNotFound,
		connect.CodeUnavailable:        http.StatusServiceUnavailable,
		connect.CodeDeadlineExceeded:   http.StatusGatewayTimeout,
		connect.CodeFailedPrecondition: http.StatusBadRequest,
	}[code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if code == connect.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="quarry"`)
	}
	writeJSON(w, status, map[string]string{"code": code.String(), "message": errMessage(err)})
}

func errMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
