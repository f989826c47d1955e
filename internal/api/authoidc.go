package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/httpguard"
	"github.com/quarry-project/quarry/internal/metrics"
	"github.com/quarry-project/quarry/internal/store"
)

// Single sign-on with OpenID Connect (authorization code flow with PKCE):
//
//	GET /auth/oidc/login?next=/images → redirect to the identity provider
//	GET /auth/oidc/callback           → session cookie, redirect to next
//	GET /auth/config                  → {"sso": true|false} for the sign-in page
//
// The state, PKCE verifier and nonce of a login in progress stay in memory
// here, bound to the browser that started it by a short-lived cookie, and
// are used once. A successful login is recorded as a token of kind sso
// (named after the user's email and subject, with the mapped role, no
// usable secret) and a dashboard session for it, made like /auth/login
// makes one: the audit log, revocation and session checks need nothing
// new.

const (
	oidcCookie       = "quarry_oidc"
	oidcLoginTTL     = 10 * time.Minute
	maxPendingOIDC   = 10000
	oidcCallback     = "/auth/oidc/callback"
	defaultRoleClaim = "groups"
)

// OIDCConfig configures single sign-on.
type OIDCConfig struct {
	Issuer, ClientID, ClientSecret string
	// RedirectURL is the callback URL registered at the provider; empty
	// derives it from each request's host and scheme.
	RedirectURL string
	// RoleClaim names the ID token claim (a string or a list of strings)
	// the groups are read from (default "groups"). A user in AdminGroup is
	// an admin, else in OperatorGroup an operator, else in ViewerGroup a
	// viewer; in none of them, refused.
	RoleClaim                              string
	AdminGroup, OperatorGroup, ViewerGroup string
	// HTTPClient reaches the provider (default http.DefaultClient).
	HTTPClient *http.Client
}

// OIDC is the single sign-on state of a control plane.
type OIDC struct {
	cfg OIDCConfig

	mu       sync.Mutex
	provider *oidc.Provider // discovered at the first login, so a provider that is down does not stop the server
	pending  map[string]pendingLogin
}

type pendingLogin struct {
	verifier, nonce, redirectURL, next string
	browser                            [32]byte // SHA-256 of the oidcCookie value
	expires                            time.Time
}

// NewOIDC checks cfg; the provider is contacted at the first login.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	switch {
	case cfg.Issuer == "" || cfg.ClientID == "":
		return nil, errors.New("single sign-on needs --oidc-issuer and --oidc-client-id")
	case cfg.AdminGroup == "" && cfg.OperatorGroup == "" && cfg.ViewerGroup == "":
		return nil, errors.New("single sign-on needs at least one of --oidc-admin-group, --oidc-operator-group, --oidc-viewer-group: without them nobody could sign in")
	}
	if cfg.RoleClaim == "" {
		cfg.RoleClaim = defaultRoleClaim
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	return &OIDC{cfg: cfg, pending: map[string]pendingLogin{}}, nil
}

func (o *OIDC) discover(ctx context.Context) (*oidc.Provider, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider != nil {
		return o.provider, nil
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, o.cfg.HTTPClient), 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, o.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("the identity provider %s cannot be reached: %w", o.cfg.Issuer, err)
	}
	o.provider = p
	return p, nil
}

func (o *OIDC) oauth2Config(p *oidc.Provider, redirectURL string) *oauth2.Config {
	scopes := []string{oidc.ScopeOpenID, "email", "profile"}
	if o.cfg.RoleClaim == "groups" {
		scopes = append(scopes, "groups")
	}
	return &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: redirectURL, Scopes: scopes}
}

// remember keeps a login in progress under state.
func (o *OIDC) remember(state string, p pendingLogin, now time.Time) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pruneLocked(now)
	if len(o.pending) >= maxPendingOIDC {
		return errors.New("too many sign-ins in progress; try again in a few minutes")
	}
	o.pending[state] = p
	return nil
}

// prune forgets the logins in progress that expired by now.
func (o *OIDC) prune(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pruneLocked(now)
}

func (o *OIDC) pruneLocked(now time.Time) {
	for k, v := range o.pending {
		if !now.Before(v.expires) {
			delete(o.pending, k)
		}
	}
}

// take removes and returns the login in progress under state.
func (o *OIDC) take(state string, now time.Time) (pendingLogin, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p, ok := o.pending[state]
	delete(o.pending, state)
	return p, ok && now.Before(p.expires)
}

// role maps the groups of a user to a role; "" is none.
func (o *OIDC) role(groups []string) store.Role {
	for _, m := range []struct {
		group string
		role  store.Role
	}{{o.cfg.AdminGroup, store.RoleAdmin}, {o.cfg.OperatorGroup, store.RoleOperator}, {o.cfg.ViewerGroup, store.RoleViewer}} {
		if m.group != "" && slices.Contains(groups, m.group) {
			return m.role
		}
	}
	return ""
}

func (o *OIDC) groupNames() string {
	var g []string
	for _, s := range []string{o.cfg.AdminGroup, o.cfg.OperatorGroup, o.cfg.ViewerGroup} {
		if s != "" {
			g = append(g, s)
		}
	}
	return strings.Join(g, ", ")
}

// claimStrings reads a claim that is a string or a list of strings.
func claimStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// localPath is next when it is a path on this server, else "/": a login
// must not become a redirect to anywhere.
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (a *Auth) ssoConfig(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		SSO bool `json:"sso"`
	}{a.OIDC != nil})
}

func (a *Auth) oidcLogin(w http.ResponseWriter, r *http.Request) {
	o := a.OIDC
	p, err := o.discover(r.Context())
	if err != nil {
		a.Logger.WarnContext(r.Context(), "single sign-on", "err", err)
		ssoPage(w, http.StatusBadGateway, "The identity provider cannot be reached", "Try again in a minute, or sign in with a token.")
		return
	}
	redirectURL := o.cfg.RedirectURL
	if redirectURL == "" {
		scheme := "http"
		if httpguard.IsHTTPS(r) {
			scheme = "https"
		}
		redirectURL = scheme + "://" + r.Host + oidcCallback
	}
	now := a.Now()
	browser := randomToken()
	state, verifier, nonce := randomToken(), oauth2.GenerateVerifier(), randomToken()
	if err := o.remember(state, pendingLogin{verifier: verifier, nonce: nonce, redirectURL: redirectURL,
		next: localPath(r.URL.Query().Get("next")), browser: sha256.Sum256([]byte(browser)), expires: now.Add(oidcLoginTTL)}, now); err != nil {
		ssoPage(w, http.StatusServiceUnavailable, "Sign-in is busy", err.Error())
		return
	}
	// Lax, not Strict: the provider's redirect back is a cross-site
	// navigation, and the cookie must come with it.
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: browser, Path: "/auth/oidc/", MaxAge: int(oidcLoginTTL / time.Second),
		HttpOnly: true, Secure: httpguard.IsHTTPS(r), SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, o.oauth2Config(p, redirectURL).AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)), http.StatusFound)
}

// ssoRefusal is a callback that signs nobody in: its page says why, the
// audit log says more.
type ssoRefusal struct {
	status         int
	title, message string
	detail         error
}

func (e *ssoRefusal) Error() string {
	if e.detail != nil {
		return e.message + ": " + e.detail.Error()
	}
	return e.message
}

func (a *Auth) oidcCallback(w http.ResponseWriter, r *http.Request) {
	var caller Caller
	var identity string
	next, err := a.oidcSignIn(w, r, &caller, &identity)
	e := store.AuditEntry{Time: a.Now(), Actor: caller.Actor(), Role: caller.Role, Procedure: "GET " + oidcCallback,
		Target: clip(identity), Result: "ok", RemoteAddr: r.RemoteAddr}
	var refusal *ssoRefusal
	if err != nil {
		e.Result, e.Message = "internal", clip(err.Error())
		if errors.As(err, &refusal) {
			e.Result = map[int]string{http.StatusUnauthorized: "unauthenticated", http.StatusForbidden: "permission_denied",
				http.StatusTooManyRequests: "resource_exhausted"}[refusal.status]
		}
	}
	a.write(context.WithoutCancel(r.Context()), e)
	switch {
	case errors.As(err, &refusal):
		ssoPage(w, refusal.status, refusal.title, refusal.message)
	case err != nil:
		a.Logger.ErrorContext(r.Context(), "single sign-on", "err", err)
		ssoPage(w, http.StatusInternalServerError, "Sign-in failed", "The control plane's log has the details.")
	default:
		http.Redirect(w, r, next, http.StatusSeeOther)
	}
}

// oidcSignIn finishes a login: it checks the state against the browser,
// exchanges the code, verifies the ID token, maps the role and starts the
// session. It returns the page to go to.
func (a *Auth) oidcSignIn(w http.ResponseWriter, r *http.Request, caller *Caller, identity *string) (string, error) {
	o := a.OIDC
	q := r.URL.Query()
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: "/auth/oidc/", MaxAge: -1,
		HttpOnly: true, Secure: httpguard.IsHTTPS(r), SameSite: http.SameSiteLaxMode})
	client := clientOf(r.RemoteAddr)
	if !a.Limiter.Allow(client) {
		return "", &ssoRefusal{status: http.StatusTooManyRequests, title: "Too many failed sign-ins",
			message: "Too many failed sign-ins from " + client + "; wait a minute."}
	}
	if msg := q.Get("error"); msg != "" {
		return "", &ssoRefusal{status: http.StatusUnauthorized, title: "The identity provider refused the sign-in",
			message: strings.TrimSpace(msg + " " + q.Get("error_description"))}
	}
	now := a.Now()
	pending, ok := o.take(q.Get("state"), now)
	browser := ""
	if c, err := r.Cookie(oidcCookie); err == nil {
		browser = c.Value
	}
	hb := sha256.Sum256([]byte(browser))
	if !ok || subtle.ConstantTimeCompare(hb[:], pending.browser[:]) != 1 {
		a.fail(client, metrics.AuthInvalidToken)
		return "", &ssoRefusal{status: http.StatusUnauthorized, title: "This sign-in is not valid",
			message: "It has expired, was already used, or was started in another browser. Sign in again."}
	}
	p, err := o.discover(r.Context())
	if err != nil {
		return "", err
	}
	ctx := oidc.ClientContext(r.Context(), o.cfg.HTTPClient)
	tok, err := o.oauth2Config(p, pending.redirectURL).Exchange(ctx, q.Get("code"), oauth2.VerifierOption(pending.verifier))
	if err != nil {
		a.fail(client, metrics.AuthInvalidToken)
		return "", &ssoRefusal{status: http.StatusUnauthorized, title: "The identity provider refused the sign-in",
			message: "The sign-in code could not be exchanged. Sign in again.", detail: err}
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := p.Verifier(&oidc.Config{ClientID: o.cfg.ClientID, Now: a.Now}).Verify(ctx, raw)
	if err == nil && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(pending.nonce)) != 1 {
		err = errors.New("the ID token's nonce is not this sign-in's")
	}
	if err != nil {
		a.fail(client, metrics.AuthInvalidToken)
		return "", &ssoRefusal{status: http.StatusUnauthorized, title: "The identity provider's answer is not valid",
			message: "Its ID token did not verify. Sign in again.", detail: err}
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return "", err
	}
	email, _ := claims["email"].(string)
	*identity = "sub " + idt.Subject
	if email != "" {
		*identity = email + " (" + *identity + ")"
	}
	groups := claimStrings(claims[o.cfg.RoleClaim])
	role := o.role(groups)
	if role == "" {
		return "", &ssoRefusal{status: http.StatusForbidden, title: "No access to Quarry",
			message: fmt.Sprintf("You are signed in at the identity provider as %s, but none of your groups is one Quarry grants a role to (%s). Ask an administrator to add you to one of them.",
				*identity, o.groupNames())}
	}

	t, _ := auth.New(store.TokenSSO) // the secret is dropped: only the session uses this token
	t.Name, t.Role, t.CreatedAt = "sso "+*identity, role, now
	t.ExpiresAt = a.sessionExpiry(t, now)
	if err := a.Store.CreateToken(r.Context(), t); err != nil {
		return "", err
	}
	*caller = Caller{TokenID: t.ID, TokenName: t.Name, Role: t.Role, Session: true}
	if _, _, err := a.startSession(w, r, t, now); err != nil {
		return "", err
	}
	return pending.next, nil
}

var ssoTemplate = template.Must(template.New("sso").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}} · Quarry</title></head>
<body><main><h1>{{.Title}}</h1><p>{{.Message}}</p><p><a href="/">Back to the sign-in page</a></p></main></body></html>
`))

func ssoPage(w http.ResponseWriter, status int, title, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	ssoTemplate.Execute(w, struct{ Title, Message string }{title, message})
}
