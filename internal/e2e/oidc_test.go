package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/quarry-project/quarry/internal/auth"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/server"
	"github.com/quarry-project/quarry/internal/store"
)

// startOIDC starts a real OpenID Connect provider on loopback and a control
// plane that signs dashboard users in with it.
func startOIDC(t *testing.T, opts ...quarrytest.ServerOption) (*mockoidc.MockOIDC, *quarrytest.Server) {
	t.Helper()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	c := m.Config()
	srv := quarrytest.StartServer(t, append(opts, func(cfg *server.Config) {
		cfg.OIDC.Issuer, cfg.OIDC.ClientID, cfg.OIDC.ClientSecret = c.Issuer, c.ClientID, c.ClientSecret
		cfg.OIDC.AdminGroup, cfg.OIDC.OperatorGroup, cfg.OIDC.ViewerGroup = "quarry-admins", "quarry-ops", "quarry-view"
	})...)
	return m, srv
}

// cookieBrowser is an HTTP client that keeps cookies and follows redirects, as a
// browser going through the sign-in would.
func cookieBrowser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar}
}

func getPage(t *testing.T, hc *http.Client, u string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// ssoSession signs in as user through the provider and returns the
// browser, the page it landed on and its session (nil when refused).
func ssoSession(t *testing.T, m *mockoidc.MockOIDC, srv *quarrytest.Server, user *mockoidc.MockUser) (*http.Client, *http.Response, string, map[string]any) {
	t.Helper()
	m.QueueUser(user)
	b := cookieBrowser(t)
	resp, body := getPage(t, b, srv.URL+"/auth/oidc/login?next="+url.QueryEscape("/images?node=n1"))
	if resp.StatusCode != http.StatusOK {
		return b, resp, body, nil
	}
	sresp, sbody := getPage(t, b, srv.URL+"/auth/session")
	if sresp.StatusCode != http.StatusOK {
		return b, resp, body, nil
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(sbody), &info); err != nil {
		t.Fatal(err)
	}
	return b, resp, body, info
}

func TestOIDCSignIn(t *testing.T) {
	m, srv := startOIDC(t)
	const list, register = "/quarry.v1.NodeService/ListNodes", "/quarry.v1.NodeService/RegisterNode"

	if _, body := getPage(t, http.DefaultClient, srv.URL+"/auth/config"); !strings.Contains(body, `"sso":true`) {
		t.Errorf("/auth/config = %s, want sso true", body)
	}

	t.Run("admin group", func(t *testing.T) {
		b, resp, _, info := ssoSession(t, m, srv, &mockoidc.MockUser{Subject: "u-admin", Email: "ada@example.com", Groups: []string{"staff", "quarry-admins"}})
		if info == nil {
			t.Fatalf("no session after signing in as an admin (landed on %s, HTTP %d)", resp.Request.URL, resp.StatusCode)
		}
		if got := resp.Request.URL.RequestURI(); got != "/images?node=n1" {
			t.Errorf("landed on %s, want the page the sign-in started from", got)
		}
		if info["role"] != "admin" || !strings.Contains(info["tokenName"].(string), "ada@example.com") {
			t.Errorf("session %v, want role admin and a name with the email", info)
		}
		csrf, _ := info["csrfToken"].(string)
		if code, msg := rawCall(t, b, srv.URL, register, `{"name":"sso1","managementAddress":"10.9.0.1"}`, http.Header{"X-Csrf-Token": {csrf}}); code != "ok" {
			t.Errorf("an SSO admin's RegisterNode: %s %q", code, msg)
		}
		if code, _ := rawCall(t, b, srv.URL, register, `{"name":"sso2","managementAddress":"10.9.0.2"}`, nil); code != "permission_denied" {
			t.Errorf("an SSO admin's RegisterNode without the CSRF header: %s, want permission_denied", code)
		}
	})

	t.Run("operator group", func(t *testing.T) {
		b, _, _, info := ssoSession(t, m, srv, &mockoidc.MockUser{Subject: "u-op", Email: "otto@example.com", Groups: []string{"quarry-ops", "quarry-view"}})
		if info == nil || info["role"] != "operator" {
			t.Fatalf("session %v, want role operator", info)
		}
		csrf, _ := info["csrfToken"].(string)
		if code, _ := rawCall(t, b, srv.URL, register, `{"name":"sso3","managementAddress":"10.9.0.3"}`, http.Header{"X-Csrf-Token": {csrf}}); code != "permission_denied" {
			t.Errorf("an SSO operator's RegisterNode: %s, want permission_denied", code)
		}
		if code, _ := rawCall(t, b, srv.URL, list, `{}`, http.Header{"X-Csrf-Token": {csrf}}); code != "ok" {
			t.Errorf("an SSO operator's ListNodes: %s", code)
		}
	})

	t.Run("listed as an sso token", func(t *testing.T) {
		resp, err := srv.Tokens.ListTokens(t.Context(), connect.NewRequest(&quarryv1.ListTokensRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, tok := range resp.Msg.GetTokens() {
			if strings.Contains(tok.GetName(), "ada@example.com") {
				found = true
				if tok.GetKind() != quarryv1.TokenKind_TOKEN_KIND_SSO || tok.GetRole() != quarryv1.Role_ROLE_ADMIN {
					t.Errorf("the SSO admin's token is listed as %v %v, want TOKEN_KIND_SSO ROLE_ADMIN", tok.GetKind(), tok.GetRole())
				}
			}
		}
		if !found {
			t.Fatalf("ListTokens has no token of the SSO admin: %v", resp.Msg.GetTokens())
		}
		useToken(srv.URL, srv.AdminToken)
		out := mustQuarry(t, srv.URL, "token", "ls")
		// ID NAME… KIND ROLE STATE: the name "sso EMAIL (sub SUBJECT)" is 4 words.
		var row []string
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "ada@example.com") {
				row = strings.Fields(line)
			}
		}
		if len(row) < 8 || row[5] != "sso" || row[6] != "admin" || row[7] != "active" {
			t.Errorf("quarry token ls row of the SSO admin = %q, want kind sso, role admin, active:\n%s", row, out)
		}
	})

	t.Run("no mapped group", func(t *testing.T) {
		_, resp, body, info := ssoSession(t, m, srv, &mockoidc.MockUser{Subject: "u-none", Email: "nina@example.com", Groups: []string{"staff"}})
		if info != nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "No access to Quarry") || !strings.Contains(body, "quarry-admins") {
			t.Errorf("a user in no mapped group: HTTP %d, session %v, page:\n%s", resp.StatusCode, info, body)
		}
	})

	t.Run("wrong state", func(t *testing.T) {
		m.QueueUser(&mockoidc.MockUser{Subject: "u-state", Email: "sam@example.com", Groups: []string{"quarry-admins"}})
		b := cookieBrowser(t)
		// Stop at the provider's redirect back, and come back with another state.
		b.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
			if req.URL.Path == "/auth/oidc/callback" {
				return http.ErrUseLastResponse
			}
			return nil
		}
		resp, _ := getPage(t, b, srv.URL+"/auth/oidc/login")
		back, err := resp.Location()
		if resp.StatusCode != http.StatusFound || err != nil {
			t.Fatalf("the provider answered HTTP %d, %v; want a redirect back", resp.StatusCode, err)
		}
		q := back.Query()
		q.Set("state", strings.Repeat("0", 64))
		back.RawQuery = q.Encode()
		resp, body := getPage(t, b, back.String())
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not valid") {
			t.Errorf("a callback with a wrong state: HTTP %d:\n%s", resp.StatusCode, body)
		}
		if sresp, _ := getPage(t, b, srv.URL+"/auth/session"); sresp.StatusCode == http.StatusOK {
			t.Error("a callback with a wrong state made a session")
		}
	})

	t.Run("state from another browser", func(t *testing.T) {
		m.QueueUser(&mockoidc.MockUser{Subject: "u-csrf", Email: "eve@example.com", Groups: []string{"quarry-admins"}})
		b := cookieBrowser(t)
		b.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
			if req.URL.Path == "/auth/oidc/callback" {
				return http.ErrUseLastResponse
			}
			return nil
		}
		resp, _ := getPage(t, b, srv.URL+"/auth/oidc/login")
		back, _ := resp.Location()
		// The victim's browser, without the sign-in cookie, follows it.
		victim := cookieBrowser(t)
		if resp, _ := getPage(t, victim, back.String()); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a callback in another browser: HTTP %d, want 401", resp.StatusCode)
		}
	})

	t.Run("audit", func(t *testing.T) {
		resp, err := srv.Audit.ListAudit(t.Context(), connect.NewRequest(&quarryv1.ListAuditRequest{Limit: 1000}))
		if err != nil {
			t.Fatal(err)
		}
		entries := resp.Msg.GetEntries()
		var okAdmin, refused bool
		for _, e := range entries {
			if e.GetProcedure() != "GET /auth/oidc/callback" {
				continue
			}
			if e.GetResult() == "ok" && strings.Contains(e.GetActor(), "ada@example.com") && strings.Contains(e.GetActor(), "u-admin") && e.GetRole() == quarryv1.Role_ROLE_ADMIN {
				okAdmin = true
			}
			if e.GetResult() == "permission_denied" && strings.Contains(e.GetTarget(), "nina@example.com") && strings.Contains(e.GetTarget(), "u-none") {
				refused = true
			}
		}
		if !okAdmin || !refused {
			t.Errorf("want the admin's sign-in (actor with email and subject) and the refused one (target with email and subject) in:\n%s", dumpAudit(entries))
		}
		var ssoRegister bool
		for _, e := range entries {
			if strings.HasSuffix(e.GetProcedure(), "RegisterNode") && e.GetResult() == "ok" && strings.Contains(e.GetActor(), "ada@example.com") {
				ssoRegister = true
			}
		}
		if !ssoRegister {
			t.Errorf("the SSO admin's RegisterNode is not audited under the user's email:\n%s", dumpAudit(entries))
		}
	})
}

// TestExpiredLoginsSwept: once they expire, single sign-on tokens and
// dashboard sessions are removed by the control plane's periodic sweep,
// without anyone signing in again; API tokens stay, listed as expired.
func TestExpiredLoginsSwept(t *testing.T) {
	clock := quarrytest.NewClock()
	m, srv := startOIDC(t, quarrytest.WithClock(clock), func(cfg *server.Config) { cfg.SweepInterval = 20 * time.Millisecond })
	ctx := t.Context()
	sessionOf := func(b *http.Client) string {
		u, _ := url.Parse(srv.URL)
		for _, c := range b.Jar.Cookies(u) {
			if c.Name == auth.SessionCookie {
				return auth.SessionID(c.Value)
			}
		}
		t.Fatal("the browser has no session cookie")
		return ""
	}
	ssoTokens := func() []string {
		resp, err := srv.Tokens.ListTokens(ctx, connect.NewRequest(&quarryv1.ListTokensRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, tok := range resp.Msg.GetTokens() {
			if tok.GetKind() == quarryv1.TokenKind_TOKEN_KIND_SSO {
				ids = append(ids, tok.GetId())
			}
		}
		return ids
	}

	b, _, _, info := ssoSession(t, m, srv, &mockoidc.MockUser{Subject: "u-gc", Email: "gary@example.com", Groups: []string{"quarry-view"}})
	if info == nil {
		t.Fatal("no session after signing in with single sign-on")
	}
	ssoSess := sessionOf(b)
	cookie, _, code := login(t, srv.URL, srv.AdminToken)
	if code != http.StatusOK {
		t.Fatalf("token login: HTTP %d", code)
	}
	tokenSess := auth.SessionID(cookie.Value)
	short := tokenID(t, createToken(t, srv, store.RoleViewer, "short", time.Minute))
	// Swept already, many times over: nothing unexpired goes.
	quarrytest.Eventually(t, 10*time.Second, func() error {
		if ids := ssoTokens(); len(ids) != 1 {
			return fmt.Errorf("SSO tokens %v, want the one of the sign-in", ids)
		}
		return nil
	})
	for _, id := range []string{ssoSess, tokenSess} {
		if _, err := srv.Store.GetSession(ctx, id); err != nil {
			t.Fatalf("a session that has not expired: %v", err)
		}
	}

	clock.Advance(12*time.Hour + time.Second) // past the sessions and the SSO token
	quarrytest.Eventually(t, 10*time.Second, func() error {
		if ids := ssoTokens(); len(ids) != 0 {
			return fmt.Errorf("expired SSO tokens %v are still stored", ids)
		}
		for _, id := range []string{ssoSess, tokenSess} {
			if _, err := srv.Store.GetSession(ctx, id); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("expired session %s: %v, want it removed", id, err)
			}
		}
		return nil
	})
	if tok, err := srv.Store.GetToken(ctx, short); err != nil || tok.Kind != store.TokenAPI {
		t.Errorf("an expired API token after the sweep: %v, %v; want it kept (an admin made it)", tok, err)
	}
}

func TestOIDCOff(t *testing.T) {
	srv := quarrytest.StartServer(t)
	if _, body := getPage(t, http.DefaultClient, srv.URL+"/auth/config"); !strings.Contains(body, `"sso":false`) {
		t.Errorf("/auth/config = %s, want sso false", body)
	}
	if resp, _ := getPage(t, http.DefaultClient, srv.URL+"/auth/oidc/login"); resp.StatusCode == http.StatusFound {
		t.Error("/auth/oidc/login redirects without single sign-on configured")
	}
}
