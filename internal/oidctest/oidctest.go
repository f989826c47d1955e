// Package oidctest is a real OpenID Connect provider for tests that drive
// a browser through single sign-on: github.com/oauth2-proxy/mockoidc (the
// authorization code flow with PKCE, signed ID tokens, discovery and JWKS)
// with a sign-in page in front of its authorization endpoint, where the
// browser picks which of the configured users it signs in as. Only test
// programs use it; the quarry binary does not.
package oidctest

import (
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/oauth2-proxy/mockoidc"
)

// User is someone who can sign in at the provider.
type User struct {
	Subject, Email string
	Groups         []string
}

// ParseUser reads "SUBJECT:EMAIL:GROUP,GROUP…" (no groups: "SUBJECT:EMAIL:").
func ParseUser(s string) (User, error) {
	f := strings.Split(s, ":")
	if len(f) != 3 || f[0] == "" || f[1] == "" {
		return User{}, fmt.Errorf("user %q: give SUBJECT:EMAIL:GROUP,GROUP… (the groups may be empty)", s)
	}
	u := User{Subject: f[0], Email: f[1]}
	for _, g := range strings.Split(f[2], ",") {
		if g = strings.TrimSpace(g); g != "" {
			u.Groups = append(u.Groups, g)
		}
	}
	return u, nil
}

// Provider is a running provider.
type Provider struct {
	m     *mockoidc.MockOIDC
	users []User

	// mu makes choosing the user and the authorization that takes it from
	// mockoidc's queue one step, so two sign-ins at once cannot swap users.
	mu sync.Mutex
}

// LoginParam is the query parameter of the authorization endpoint that
// names the user the browser chose on the sign-in page (by subject).
const LoginParam = "login_as"

// Start serves a provider for users on ln until Close.
func Start(ln net.Listener, users []User) (*Provider, error) {
	if len(users) == 0 {
		return nil, errors.New("oidctest: give at least one user")
	}
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		return nil, err
	}
	p := &Provider{m: m, users: users}
	if err := m.AddMiddleware(p.signInPage); err != nil {
		return nil, err
	}
	if err := m.Start(ln, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// Issuer, ClientID and ClientSecret are what a relying party is configured with.
func (p *Provider) Issuer() string       { return p.m.Issuer() }
func (p *Provider) ClientID() string     { return p.m.ClientID }
func (p *Provider) ClientSecret() string { return p.m.ClientSecret }

// Close stops the provider.
func (p *Provider) Close() error { return p.m.Shutdown() }

func (p *Provider) user(subject string) (User, bool) {
	for _, u := range p.users {
		if u.Subject == subject {
			return u, true
		}
	}
	return User{}, false
}

// signInPage stands before the authorization endpoint: without LoginParam
// it answers the page to choose a user on; with it, it has mockoidc
// authorize that user.
func (p *Provider) signInPage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != mockoidc.AuthorizationEndpoint {
			next.ServeHTTP(w, r)
			return
		}
		q := r.URL.Query()
		subject := q.Get(LoginParam)
		if subject == "" {
			q.Del(LoginParam)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			pageTemplate.Execute(w, struct {
				Action string
				Query  map[string][]string
				Users  []User
				Param  string
			}{mockoidc.AuthorizationEndpoint, q, p.users, LoginParam})
			return
		}
		u, ok := p.user(subject)
		if !ok {
			http.Error(w, fmt.Sprintf("no test user has subject %q", subject), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		// A user left queued by an authorization that failed its checks
		// before taking it must not sign in instead.
		p.m.UserQueue.Lock()
		p.m.UserQueue.Queue = nil
		p.m.UserQueue.Unlock()
		p.m.QueueUser(&mockoidc.MockUser{Subject: u.Subject, Email: u.Email, EmailVerified: true, Groups: u.Groups})
		next.ServeHTTP(w, r)
	})
}

var pageTemplate = template.Must(template.New("signin").Funcs(template.FuncMap{"join": strings.Join}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Test identity provider</title></head>
<body><main>
<h1>Test identity provider</h1>
<p>Sign in as:</p>
{{range .Users}}<form method="get" action="{{$.Action}}">
{{range $k, $vs := $.Query}}{{range $vs}}<input type="hidden" name="{{$k}}" value="{{.}}">
{{end}}{{end}}<button type="submit" name="{{$.Param}}" value="{{.Subject}}">{{.Email}} ({{if .Groups}}groups {{join .Groups ", "}}{{else}}no groups{{end}})</button>
</form>
{{end}}</main></body></html>
`))
