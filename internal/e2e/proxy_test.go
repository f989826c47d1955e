package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/server"
)

// forwarding sends its headers with every request, as a proxy would.
type forwarding struct {
	h    http.Header
	next http.RoundTripper
}

func (f forwarding) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range f.h {
		r.Header[k] = v
	}
	return f.next.RoundTrip(r)
}

// viaProxy returns clients with token whose requests carry h.
func viaProxy(srv *quarrytest.Server, token string, h http.Header) quarrytest.Clients {
	hc := quarrytest.HTTPClient(token)
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = forwarding{h: h, next: next}
	return srv.ClientsWith(hc)
}

func xff(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }

// TestTrustedProxies: behind a trusted proxy the failure limit and the
// audit log count the client the proxy names, and a session cookie is
// Secure when the client spoke https to the proxy; from any other peer the
// same headers are ignored.
func TestTrustedProxies(t *testing.T) {
	const limit = 3
	bad := "qk_0123456789ab_" + strings.Repeat("0", 64)
	list := func(c quarrytest.Clients) error {
		_, err := c.Nodes.ListNodes(t.Context(), connect.NewRequest(&quarryv1.ListNodesRequest{}))
		return err
	}
	secureCookie := func(srv *quarrytest.Server, h http.Header) bool {
		body, _ := json.Marshal(map[string]string{"token": srv.AdminToken})
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/auth/login", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, c := range resp.Cookies() {
			if c.Name == "quarry_session" {
				return c.Secure
			}
		}
		t.Fatalf("login: HTTP %d without a session cookie", resp.StatusCode)
		return false
	}

	t.Run("trusted", func(t *testing.T) {
		srv := quarrytest.StartServer(t, quarrytest.WithAuthFailures(limit, time.Minute),
			func(c *server.Config) { c.TrustedProxies = []string{"127.0.0.0/8"} })
		// A client's own X-Forwarded-For entry is skipped: the proxy
		// appended the address it saw, the last untrusted one.
		attacker := viaProxy(srv, bad, xff("203.0.113.99, 198.51.100.7"))
		for i := range limit {
			if err := list(attacker); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("wrong token %d: %v", i+1, err)
			}
		}
		if err := list(viaProxy(srv, srv.AdminToken, xff("198.51.100.7"))); connect.CodeOf(err) != connect.CodeResourceExhausted ||
			!strings.Contains(err.Error(), "from 198.51.100.7") {
			t.Errorf("the locked-out client with the right token: %v, want resource_exhausted from 198.51.100.7", err)
		}
		for _, h := range []http.Header{xff("198.51.100.8"), xff("203.0.113.99"), {"Forwarded": {`for="[2001:db8::1]:4711";proto=https`}}, nil} {
			if err := list(viaProxy(srv, srv.AdminToken, h)); err != nil {
				t.Errorf("another client behind the proxy (%v): %v, want it unaffected", h, err)
			}
		}
		// The audit log names the client.
		_, err := viaProxy(srv, bad, http.Header{"Forwarded": {`for=192.0.2.60;proto=https, for=127.0.0.1`}}).Nodes.RegisterNode(t.Context(),
			connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: "x", ManagementAddress: "10.0.0.9"}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("RegisterNode with a wrong token: %v", err)
		}
		resp, err := srv.Audit.ListAudit(t.Context(), connect.NewRequest(&quarryv1.ListAuditRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if e := findAudit(resp.Msg.GetEntries(), "quarry.v1.NodeService/RegisterNode", "unauthenticated"); e == nil || e.GetRemoteAddr() != "192.0.2.60:0" {
			t.Errorf("audit entry of the refused call: %v, want remote address 192.0.2.60:0", e)
		}
		if !secureCookie(srv, http.Header{"X-Forwarded-Proto": {"https"}}) {
			t.Error("a login the proxy says came over https got a cookie without Secure")
		}
		if secureCookie(srv, http.Header{"X-Forwarded-Proto": {"http"}}) {
			t.Error("a login over plain http got a Secure cookie")
		}
	})

	t.Run("untrusted", func(t *testing.T) {
		srv := quarrytest.StartServer(t, quarrytest.WithAuthFailures(limit, time.Minute))
		for i := range limit {
			if err := list(viaProxy(srv, bad, xff("198.51.100.7"))); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("wrong token %d: %v", i+1, err)
			}
		}
		// The header is ignored: the address that failed is the peer's.
		if err := list(viaProxy(srv, srv.AdminToken, xff("198.51.100.8"))); connect.CodeOf(err) != connect.CodeResourceExhausted ||
			!strings.Contains(err.Error(), "from 127.0.0.1") {
			t.Errorf("a forged X-Forwarded-For after the peer's failures: %v, want resource_exhausted from 127.0.0.1", err)
		}
	})

	t.Run("cookie untrusted", func(t *testing.T) {
		srv := quarrytest.StartServer(t)
		if secureCookie(srv, http.Header{"X-Forwarded-Proto": {"https"}}) {
			t.Error("X-Forwarded-Proto from an untrusted peer made the cookie Secure")
		}
	})
}
