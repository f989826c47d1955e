package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/quarry-project/quarry/internal/auth"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// rawCall POSTs body as JSON to procedure with the given headers, as a
// browser would, and returns the Connect code ("ok" on success) and message.
func rawCall(t *testing.T, hc *http.Client, base, procedure, body string, hdr http.Header) (code, msg string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return "ok", ""
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("POST %s: HTTP %d, not a Connect error: %s", procedure, resp.StatusCode, raw)
	}
	return e.Code, e.Message
}

func TestTokenLifecycle(t *testing.T) {
	clock := quarrytest.NewClock()
	srv := quarrytest.StartServer(t, quarrytest.WithClock(clock))
	ctx := t.Context()

	secrets := map[store.Role]string{}
	for _, r := range []store.Role{store.RoleViewer, store.RoleOperator, store.RoleAdmin} {
		secrets[r] = createToken(t, srv, r, "life-"+string(r), 0)
		if !strings.HasPrefix(secrets[r], "qk_") {
			t.Errorf("%s token secret %q, want qk_...", r, secrets[r])
		}
		if _, err := srv.ClientsFor(secrets[r]).Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{})); err != nil {
			t.Errorf("ListNodes with the new %s token: %v", r, err)
		}
	}

	t.Run("ls shows no secrets", func(t *testing.T) {
		resp, err := srv.Tokens.ListTokens(ctx, connect.NewRequest(&quarryv1.ListTokensRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.Msg.GetTokens()); n != 4 {
			t.Errorf("ListTokens has %d tokens, want 4 (the first admin and three new)", n)
		}
		js, err := protojson.Marshal(resp.Msg)
		if err != nil {
			t.Fatal(err)
		}
		for r, s := range append(mapsValues(secrets), srv.AdminToken) {
			_, _, secret, _ := auth.Parse(s)
			if bytes.Contains(js, []byte(secret)) {
				t.Errorf("ListTokens shows the secret of token %d: %s", r, js)
			}
		}
	})

	t.Run("revoked token is refused", func(t *testing.T) {
		_, id, _, _ := auth.Parse(secrets[store.RoleOperator])
		resp, err := srv.Tokens.RevokeToken(ctx, connect.NewRequest(&quarryv1.RevokeTokenRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Msg.GetToken().GetRevokedAt() == nil {
			t.Errorf("RevokeToken answered %v, want revoked_at set", resp.Msg.GetToken())
		}
		_, err = srv.ClientsFor(secrets[store.RoleOperator]).Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(connectMessage(err), "revoked") {
			t.Errorf("ListNodes with a revoked token: %v, want unauthenticated saying it was revoked", err)
		}
		_, err = srv.Tokens.RevokeToken(ctx, connect.NewRequest(&quarryv1.RevokeTokenRequest{Id: "000000000000"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("RevokeToken of an unknown id: %v, want not_found", err)
		}
	})

	t.Run("expired token is refused", func(t *testing.T) {
		short := createToken(t, srv, store.RoleViewer, "short", time.Minute)
		c := srv.ClientsFor(short)
		if _, err := c.Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{})); err != nil {
			t.Fatalf("ListNodes with a fresh 1-minute token: %v", err)
		}
		clock.Advance(time.Minute + time.Second)
		_, err := c.Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(connectMessage(err), "expired") {
			t.Errorf("ListNodes with an expired token: %v, want unauthenticated saying it expired", err)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for name, req := range map[string]*quarryv1.CreateTokenRequest{
			"no role":            {Kind: quarryv1.TokenKind_TOKEN_KIND_API},
			"single-use api":     {Role: quarryv1.Role_ROLE_VIEWER, SingleUse: true},
			"negative ttl":       {Role: quarryv1.Role_ROLE_VIEWER, TtlSeconds: -1},
			"ttl under a minute": {Role: quarryv1.Role_ROLE_VIEWER, TtlSeconds: 59},
			"name with a space":  {Role: quarryv1.Role_ROLE_VIEWER, Name: "a b"},
			"unknown token kind": {Kind: 9, Role: quarryv1.Role_ROLE_VIEWER},
			"sso token":          {Kind: quarryv1.TokenKind_TOKEN_KIND_SSO, Role: quarryv1.Role_ROLE_VIEWER},
		} {
			if _, err := srv.Tokens.CreateToken(ctx, connect.NewRequest(req)); connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("CreateToken %s: %v, want invalid_argument", name, err)
			}
		}
	})

	t.Run("join token", func(t *testing.T) {
		resp, err := srv.Tokens.CreateToken(ctx, connect.NewRequest(&quarryv1.CreateTokenRequest{
			Kind: quarryv1.TokenKind_TOKEN_KIND_JOIN, SingleUse: true,
		}))
		if err != nil {
			t.Fatal(err)
		}
		tok := resp.Msg.GetToken()
		if !strings.HasPrefix(resp.Msg.GetSecret(), "qj_") || !tok.GetSingleUse() {
			t.Errorf("join token %v secret %q, want a single-use qj_ token", tok, resp.Msg.GetSecret())
		}
		if got := tok.GetExpiresAt().AsTime().Sub(tok.GetCreatedAt().AsTime()); got != time.Hour {
			t.Errorf("join token lifetime %v, want the default 1h", got)
		}
		if !strings.HasPrefix(resp.Msg.GetCaHash(), "sha256:") {
			t.Errorf("join token came with CA hash %q, want sha256:...", resp.Msg.GetCaHash())
		}
		_, err = srv.ClientsFor(resp.Msg.GetSecret()).Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("ListNodes with a join token: %v, want unauthenticated", err)
		}
	})

	t.Run("the last admin token stays", func(t *testing.T) {
		first := tokenID(t, srv.AdminToken)
		other := srv.ClientsFor(secrets[store.RoleAdmin])
		if _, err := other.Tokens.RevokeToken(ctx, connect.NewRequest(&quarryv1.RevokeTokenRequest{Id: first})); err != nil {
			t.Fatalf("revoking the first admin token while another exists: %v", err)
		}
		_, err := other.Tokens.RevokeToken(ctx, connect.NewRequest(&quarryv1.RevokeTokenRequest{Id: tokenID(t, secrets[store.RoleAdmin])}))
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(connectMessage(err), "last admin token") {
			t.Errorf("revoking the last admin token: %v, want failed_precondition", err)
		}
	})
}

func mapsValues(m map[store.Role]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func tokenID(t *testing.T, secret string) string {
	t.Helper()
	_, id, _, err := auth.Parse(secret)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	srv := quarrytest.StartServer(t, quarrytest.WithDataDir(dir))
	path := auth.AdminTokenPath(dir)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(before)); got != srv.AdminToken || !strings.HasPrefix(got, "qk_") {
		t.Fatalf("admin.token holds %q", got)
	}
	resp, err := srv.Tokens.ListTokens(t.Context(), connect.NewRequest(&quarryv1.ListTokensRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := resp.Msg.GetTokens(); len(n) != 1 || n[0].GetRole() != quarryv1.Role_ROLE_ADMIN || n[0].GetName() != "admin" {
		t.Errorf("a new control plane has tokens %v, want one admin token named admin", n)
	}
	srv.Stop()

	srv = quarrytest.StartServer(t, quarrytest.WithDataDir(dir))
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("a restart rewrote admin.token: %q, then %q", before, after)
	}
	resp, err = srv.Tokens.ListTokens(t.Context(), connect.NewRequest(&quarryv1.ListTokensRequest{}))
	if err != nil {
		t.Fatalf("the admin token after a restart: %v", err)
	}
	if n := len(resp.Msg.GetTokens()); n != 1 {
		t.Errorf("after a restart there are %d tokens, want still 1", n)
	}
}

// login POSTs token to /auth/login and returns the session cookie and the
// answer.
func login(t *testing.T, base, token string) (*http.Cookie, map[string]any, int) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"token": token})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/auth/login", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	for _, c := range resp.Cookies() {
		if c.Name == auth.SessionCookie {
			return c, m, resp.StatusCode
		}
	}
	return nil, m, resp.StatusCode
}

func sessionHeaders(cookie *http.Cookie, csrf string) http.Header {
	h := http.Header{}
	h.Set("Cookie", cookie.Name+"="+cookie.Value)
	if csrf != "" {
		h.Set(auth.CSRFHeader, csrf)
	}
	return h
}

func TestDashboardSession(t *testing.T) {
	srv := quarrytest.StartServer(t)
	anon := quarrytest.HTTPClient("")
	const list, register = "/quarry.v1.NodeService/ListNodes", "/quarry.v1.NodeService/RegisterNode"

	cookie, info, status := login(t, srv.URL, srv.AdminToken)
	if status != http.StatusOK || cookie == nil {
		t.Fatalf("login with the admin token: HTTP %d, cookie %v: %v", status, cookie, info)
	}
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Secure || cookie.Path != "/" {
		t.Errorf("session cookie %s, want HttpOnly, SameSite=Strict, Path=/ and not Secure over plain HTTP", cookie)
	}
	csrf, _ := info["csrfToken"].(string)
	if info["role"] != "admin" || len(csrf) < 32 {
		t.Fatalf("login answered %v, want role admin and a csrfToken", info)
	}
	if st, err := srv.Store.GetSession(t.Context(), auth.SessionID(cookie.Value)); err != nil || st.TokenID != tokenID(t, srv.AdminToken) {
		t.Errorf("the session is not stored under the cookie's hash: %v %v", st, err)
	}

	if code, msg := rawCall(t, anon, srv.URL, list, `{}`, sessionHeaders(cookie, "")); code != "permission_denied" || !strings.Contains(msg, auth.CSRFHeader) {
		t.Errorf("ListNodes with the cookie and no CSRF header: %s %q, want permission_denied naming %s", code, msg, auth.CSRFHeader)
	}
	if code, _ := rawCall(t, anon, srv.URL, list, `{}`, sessionHeaders(cookie, strings.Repeat("0", len(csrf)))); code != "permission_denied" {
		t.Errorf("ListNodes with the cookie and a wrong CSRF header: %s, want permission_denied", code)
	}
	if code, msg := rawCall(t, anon, srv.URL, list, `{}`, sessionHeaders(cookie, csrf)); code != "ok" {
		t.Errorf("ListNodes with the cookie and its CSRF header: %s %s", code, msg)
	}
	if code, msg := rawCall(t, anon, srv.URL, register, `{"name":"s1","managementAddress":"10.9.0.1"}`, sessionHeaders(cookie, csrf)); code != "ok" {
		t.Errorf("an admin session's RegisterNode: %s %s", code, msg)
	}

	t.Run("session endpoint", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/auth/session", nil)
		req.AddCookie(cookie)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		if resp.StatusCode != http.StatusOK || m["csrfToken"] != csrf || m["role"] != "admin" {
			t.Errorf("GET /auth/session: HTTP %d %v, want the session's role and CSRF token", resp.StatusCode, m)
		}
	})

	t.Run("refused logins", func(t *testing.T) {
		if c, m, status := login(t, srv.URL, "qk_0123456789ab_"+strings.Repeat("0", 64)); status != http.StatusUnauthorized || c != nil {
			t.Errorf("login with a wrong token: HTTP %d, cookie %v: %v", status, c, m)
		}
		// A cross-site form can only send form or text content types.
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/auth/login",
			strings.NewReader(`{"token":"`+srv.AdminToken+`"}`))
		req.Header.Set("Content-Type", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || len(resp.Cookies()) > 0 {
			t.Errorf("login as text/plain: HTTP %d, cookies %v; want it refused", resp.StatusCode, resp.Cookies())
		}
	})

	t.Run("viewer session cannot mutate", func(t *testing.T) {
		vc, vinfo, status := login(t, srv.URL, createToken(t, srv, store.RoleViewer, "dash-viewer", 0))
		if status != http.StatusOK || vinfo["role"] != "viewer" {
			t.Fatalf("viewer login: HTTP %d %v", status, vinfo)
		}
		vcsrf, _ := vinfo["csrfToken"].(string)
		if code, msg := rawCall(t, anon, srv.URL, register, `{"name":"s2","managementAddress":"10.9.0.2"}`, sessionHeaders(vc, vcsrf)); code != "permission_denied" || !strings.Contains(msg, "admin role") {
			t.Errorf("a viewer session's RegisterNode: %s %q, want permission_denied saying the admin role is needed", code, msg)
		}
		if code, _ := rawCall(t, anon, srv.URL, list, `{}`, sessionHeaders(vc, vcsrf)); code != "ok" {
			t.Errorf("a viewer session's ListNodes: %s", code)
		}
		// Another session's CSRF token does not fit.
		if code, _ := rawCall(t, anon, srv.URL, list, `{}`, sessionHeaders(vc, csrf)); code != "permission_denied" {
			t.Errorf("the viewer session with the admin session's CSRF token: %s, want permission_denied", code)
		}
	})

	t.Run("revoking the token ends its sessions", func(t *testing.T) {
		secret := createToken(t, srv, store.RoleOperator, "dash-op", 0)
		oc, oinfo, _ := login(t, srv.URL, secret)
		ocsrf, _ := oinfo["csrfToken"].(string)
		if _, err := srv.Tokens.RevokeToken(t.Context(), connect.NewRequest(&quarryv1.RevokeTokenRequest{Id: tokenID(t, secret)})); err != nil {
			t.Fatal(err)
		}
		if code, _ := rawCall(t, anon, srv.URL, list, `{}`, sessionHeaders(oc, ocsrf)); code != "unauthenticated" {
			t.Errorf("a session of a revoked token: %s, want unauthenticated", code)
		}
	})

	t.Run("logout", func(t *testing.T) {
		post := func(h http.Header) int {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/auth/logout", nil)
			for k, v := range h {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if status := post(sessionHeaders(cookie, "")); status != http.StatusForbidden {
			t.Errorf("logout without the CSRF header: HTTP %d, want 403", status)
		}
		if status := post(sessionHeaders(cookie, csrf)); status != http.StatusOK {
			t.Errorf("logout: HTTP %d", status)
		}
		if code, _ := rawCall(t, anon, srv.URL, list, `{}`, sessionHeaders(cookie, csrf)); code != "unauthenticated" {
			t.Errorf("ListNodes with the cookie after logout: %s, want unauthenticated", code)
		}
		// Bearer tokens never needed the cookie or a CSRF header.
		if code, msg := rawCall(t, srv.HTTP, srv.URL, list, `{}`, nil); code != "ok" {
			t.Errorf("ListNodes with the bearer token: %s %s", code, msg)
		}
	})
}

// auditEntries returns the audit log, newest first.
func auditEntries(t *testing.T, srv *quarrytest.Server) []*quarryv1.AuditEntry {
	t.Helper()
	resp, err := srv.Audit.ListAudit(t.Context(), connect.NewRequest(&quarryv1.ListAuditRequest{Limit: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetEntries()
}

// findAudit returns the newest entry of procedure with result, or nil.
func findAudit(entries []*quarryv1.AuditEntry, procedure, result string) *quarryv1.AuditEntry {
	for _, e := range entries {
		if e.GetProcedure() == procedure && e.GetResult() == result {
			return e
		}
	}
	return nil
}

func TestAuditLog(t *testing.T) {
	srv := quarrytest.StartServer(t)
	ctx := t.Context()
	adminID := tokenID(t, srv.AdminToken)
	viewer := createToken(t, srv, store.RoleViewer, "auditor", 0)

	reg, err := srv.Nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: "a1", ManagementAddress: "10.8.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	nodeID := reg.Msg.GetNode().GetId()
	if _, err := srv.Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{})); err != nil {
		t.Fatal(err)
	}
	srv.Nodes.DeleteNode(ctx, connect.NewRequest(&quarryv1.DeleteNodeRequest{Id: "node-missing"}))
	srv.ClientsFor(viewer).Nodes.DeleteNode(ctx, connect.NewRequest(&quarryv1.DeleteNodeRequest{Id: nodeID}))
	srv.Anonymous().Pools.CreatePool(ctx, connect.NewRequest(&quarryv1.CreatePoolRequest{Name: "p1", Path: "/srv/p1"}))
	srv.ClientsFor("qk_0123456789ab_"+strings.Repeat("0", 64)).Nodes.UpdateNode(ctx, connect.NewRequest(&quarryv1.UpdateNodeRequest{Id: nodeID}))
	_, err = srv.Anonymous().Enrollment.Enroll(ctx, connect.NewRequest(&quarryv1.EnrollRequest{JoinToken: "qj_nope", NodeName: "intruder"}))
	if err == nil {
		t.Fatal("Enroll with a made-up join token succeeded")
	}
	if _, _, status := login(t, srv.URL, viewer); status != http.StatusOK {
		t.Fatalf("login: HTTP %d", status)
	}

	entries := auditEntries(t, srv)
	wants := []struct {
		procedure, result, actor, role, target, message string
	}{
		{"quarry.v1.TokenService/CreateToken", "ok", "admin (" + adminID + ")", "ROLE_ADMIN", "auditor (" + tokenID(t, viewer) + ")", ""},
		{"quarry.v1.NodeService/RegisterNode", "ok", "admin (" + adminID + ")", "ROLE_ADMIN", "a1 (" + nodeID + ")", ""},
		{"quarry.v1.NodeService/DeleteNode", "not_found", "admin (" + adminID + ")", "ROLE_ADMIN", "node-missing", "no node has id"},
		{"quarry.v1.NodeService/DeleteNode", "permission_denied", "auditor (" + tokenID(t, viewer) + ")", "ROLE_VIEWER", nodeID, "needs the admin role"},
		// Refused on their headers, before their bodies are read: no target.
		{"quarry.v1.StoragePoolService/CreatePool", "unauthenticated", "", "ROLE_UNSPECIFIED", "", "needs a token"},
		{"quarry.v1.NodeService/UpdateNode", "unauthenticated", "", "ROLE_UNSPECIFIED", "", "unknown or wrong token"},
		{"quarry.v1.EnrollmentService/Enroll", connect.CodeOf(err).String(), "agent intruder", "ROLE_UNSPECIFIED", "intruder", ""},
		{"POST /auth/login", "ok", "auditor (" + tokenID(t, viewer) + ")", "ROLE_VIEWER", tokenID(t, viewer), ""},
	}
	for _, w := range wants {
		e := findAudit(entries, w.procedure, w.result)
		if e == nil {
			t.Errorf("no audit entry for %s with result %s in:\n%s", w.procedure, w.result, dumpAudit(entries))
			continue
		}
		if e.GetActor() != w.actor || e.GetRole().String() != w.role || e.GetTarget() != w.target || !strings.Contains(e.GetMessage(), w.message) {
			t.Errorf("audit entry %s/%s = actor %q role %s target %q message %q; want actor %q role %s target %q message with %q",
				w.procedure, w.result, e.GetActor(), e.GetRole(), e.GetTarget(), e.GetMessage(), w.actor, w.role, w.target, w.message)
		}
		if host, _, err := net.SplitHostPort(e.GetRemoteAddr()); err != nil || host != "127.0.0.1" {
			t.Errorf("audit entry %s has remote address %q, want 127.0.0.1:PORT", w.procedure, e.GetRemoteAddr())
		}
		if d := time.Since(e.GetTime().AsTime()); d < 0 || d > time.Minute {
			t.Errorf("audit entry %s has time %v", w.procedure, e.GetTime().AsTime())
		}
	}
	for _, e := range entries {
		if p := e.GetProcedure(); strings.Contains(p, "/List") || strings.Contains(p, "/Get") {
			t.Errorf("a read is in the audit log: %v", e)
		}
	}
	// Newest first, ids increasing with time.
	for i := 1; i < len(entries); i++ {
		if entries[i-1].GetId() <= entries[i].GetId() {
			t.Errorf("audit entries out of order: %d before %d", entries[i-1].GetId(), entries[i].GetId())
		}
	}

	// Paging.
	page, err := srv.Audit.ListAudit(ctx, connect.NewRequest(&quarryv1.ListAuditRequest{Limit: 2, BeforeId: entries[0].GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if p := page.Msg.GetEntries(); len(p) != 2 || p[0].GetId() != entries[1].GetId() {
		t.Errorf("ListAudit(limit 2, before %d) = %v, want entries %d and %d", entries[0].GetId(), p, entries[1].GetId(), entries[2].GetId())
	}
	// The audit log is for admins.
	_, err = srv.ClientsFor(viewer).Audit.ListAudit(ctx, connect.NewRequest(&quarryv1.ListAuditRequest{}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("ListAudit as a viewer: %v, want permission_denied", err)
	}
}

func dumpAudit(entries []*quarryv1.AuditEntry) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "  %d %s %s %q %s %q %q\n", e.GetId(), e.GetProcedure(), e.GetResult(), e.GetActor(), e.GetRole(), e.GetTarget(), e.GetMessage())
	}
	return b.String()
}

func TestAuthFailureLimit(t *testing.T) {
	const limit = 5
	clock := quarrytest.NewClock()
	srv := quarrytest.StartServer(t, quarrytest.WithClock(clock), quarrytest.WithAuthFailures(limit, time.Minute))
	ctx := t.Context()
	bad := srv.ClientsFor("qk_0123456789ab_" + strings.Repeat("0", 64))
	list := func(c quarrytest.Clients) error {
		_, err := c.Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{}))
		return err
	}

	// Successful calls cost nothing.
	for range 3 * limit {
		if err := list(srv.Clients); err != nil {
			t.Fatal(err)
		}
	}
	for i := range limit {
		if err := list(bad); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("wrong token, attempt %d: %v, want unauthenticated", i+1, err)
		}
	}
	wantExhausted := func(what string, err error) {
		t.Helper()
		const msg = "too many failed authentications from 127.0.0.1; wait a minute"
		if connect.CodeOf(err) != connect.CodeResourceExhausted || connectMessage(err) != msg {
			t.Errorf("%s after %d failures: %v, want resource_exhausted %q", what, limit, err, msg)
		}
	}
	wantExhausted("a wrong token", list(bad))
	wantExhausted("the right token", list(srv.Clients))
	_, err := srv.Nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: "r1", ManagementAddress: "10.7.0.1"}))
	wantExhausted("a mutating call with the right token", err)
	if _, _, status := login(t, srv.URL, srv.AdminToken); status != http.StatusTooManyRequests {
		t.Errorf("login with the right token after %d failures: HTTP %d, want 429", limit, status)
	}

	// Other clients are not affected: 127.0.0.2 is loopback too. From
	// there, the refusals of 127.0.0.1 can be read in the audit log.
	if other := fromOtherLoopback(t, srv); other != nil {
		resp, err := other.Audit.ListAudit(ctx, connect.NewRequest(&quarryv1.ListAuditRequest{}))
		if err != nil {
			t.Errorf("ListAudit from 127.0.0.2 while 127.0.0.1 is locked out: %v", err)
		} else if findAudit(resp.Msg.GetEntries(), "quarry.v1.NodeService/RegisterNode", "resource_exhausted") == nil {
			t.Errorf("the refused RegisterNode is not in the audit log:\n%s", dumpAudit(resp.Msg.GetEntries()))
		}
	}

	// Attempts come back over the window: one after a fifth of it...
	clock.Advance(time.Minute / limit)
	if err := list(srv.Clients); err != nil {
		t.Errorf("the right token a fifth of the window later: %v", err)
	}
	if err := list(bad); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("a wrong token a fifth of the window later: %v, want unauthenticated", err)
	}
	wantExhausted("the right token right after another failure", list(srv.Clients))
	// ...and all of them after the whole window.
	clock.Advance(time.Minute)
	for i := range limit {
		if err := list(bad); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("wrong token, attempt %d after the window: %v, want unauthenticated", i+1, err)
		}
	}
	clock.Advance(time.Minute)
	if err := list(srv.Clients); err != nil {
		t.Errorf("the right token after the window: %v", err)
	}
}

// fromOtherLoopback returns admin clients of srv that connect from
// 127.0.0.2, or nil (logged) where this host cannot.
func fromOtherLoopback(t *testing.T, srv *quarrytest.Server) *quarrytest.Clients {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	conn, err := d.DialContext(t.Context(), "tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Logf("not checking another client: cannot connect from 127.0.0.2: %v", err)
		return nil
	}
	conn.Close()
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	c := srv.ClientsWith(&http.Client{Transport: &auth.Transport{Token: srv.AdminToken, Base: tr}})
	return &c
}
