package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// postJSON sends body as a plain JSON POST to procedure with hc, the way
// curl or a browser would, and returns the status and the decoded JSON
// answer.
func postJSON(t *testing.T, ctx context.Context, hc *http.Client, base, procedure, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("POST %s: answer is not JSON: %v\n%s", procedure, err, raw)
	}
	return resp.StatusCode, m
}

// jsonNodes returns the "nodes" array of a ListNodes JSON answer.
func jsonNodes(t *testing.T, m map[string]any) []map[string]any {
	t.Helper()
	list, _ := m["nodes"].([]any)
	var out []map[string]any
	for _, v := range list {
		n, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("nodes holds %T, want objects: %v", v, m)
		}
		out = append(out, n)
	}
	return out
}

// protoRecorder is an http.RoundTripper that remembers the HTTP major
// version of the last response, to prove which protocol was spoken.
type protoRecorder struct {
	rt    http.RoundTripper
	major atomic.Int32
}

func (p *protoRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.rt.RoundTrip(r)
	if resp != nil {
		p.major.Store(int32(resp.ProtoMajor))
	}
	return resp, err
}

func TestAPIProtocols(t *testing.T) {
	srv := quarrytest.StartServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// Register through a plain JSON POST: field names in camelCase, enum
	// values by name, the address normalized.
	code, reg := postJSON(t, ctx, srv.HTTP, srv.URL, "/quarry.v1.NodeService/RegisterNode",
		`{"name":"n1","managementAddress":"10.0.0.5/24"}`)
	if code != http.StatusOK {
		t.Fatalf("RegisterNode over JSON: HTTP %d: %v", code, reg)
	}
	node, _ := reg["node"].(map[string]any)
	if node["name"] != "n1" || node["managementAddress"] != "10.0.0.5:9090" {
		t.Errorf("RegisterNode JSON = %v, want name n1 and managementAddress 10.0.0.5:9090", reg)
	}
	if s := node["state"]; s != "NODE_STATE_UNKNOWN" && s != "NODE_STATE_UNREACHABLE" {
		t.Errorf("RegisterNode JSON state = %v, want the enum name NODE_STATE_UNKNOWN or NODE_STATE_UNREACHABLE", s)
	}
	id, _ := node["id"].(string)
	if !strings.HasPrefix(id, "node-") {
		t.Fatalf("RegisterNode JSON id = %q, want node-...", id)
	}

	// checkList asserts that a listing holds exactly the registered node.
	checkList := func(t *testing.T, nodes []*quarryv1.Node) {
		t.Helper()
		if len(nodes) != 1 {
			t.Fatalf("ListNodes returned %d nodes, want 1: %v", len(nodes), nodes)
		}
		n := nodes[0]
		if n.GetId() != id || n.GetName() != "n1" || n.GetManagementAddress() != "10.0.0.5:9090" {
			t.Errorf("ListNodes = %v, want node %s n1 at 10.0.0.5:9090", n, id)
		}
		if n.GetCreatedAt() == nil {
			t.Errorf("ListNodes: node has no created_at")
		}
	}

	t.Run("json", func(t *testing.T) {
		code, m := postJSON(t, ctx, srv.HTTP, srv.URL, "/quarry.v1.NodeService/ListNodes", `{}`)
		if code != http.StatusOK {
			t.Fatalf("ListNodes over JSON: HTTP %d: %v", code, m)
		}
		nodes := jsonNodes(t, m)
		if len(nodes) != 1 || nodes[0]["id"] != id || nodes[0]["managementAddress"] != "10.0.0.5:9090" {
			t.Fatalf("ListNodes JSON = %v, want node %s at 10.0.0.5:9090", m, id)
		}
		if s, _ := nodes[0]["state"].(string); !strings.HasPrefix(s, "NODE_STATE_") {
			t.Errorf("ListNodes JSON state = %q, want an enum name", s)
		}
	})

	t.Run("connect", func(t *testing.T) {
		resp, err := srv.Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		checkList(t, resp.Msg.GetNodes())
	})

	t.Run("grpc", func(t *testing.T) {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr := &http.Transport{Protocols: p}
		defer tr.CloseIdleConnections()
		rec := &protoRecorder{rt: tr}
		c := quarryv1connect.NewNodeServiceClient(&http.Client{Transport: &auth.Transport{Token: srv.AdminToken, Base: rec}}, srv.URL, connect.WithGRPC())
		resp, err := c.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		checkList(t, resp.Msg.GetNodes())
		if got := rec.major.Load(); got != 2 {
			t.Errorf("gRPC call went over HTTP/%d, want HTTP/2 (h2c)", got)
		}
		// Errors keep their code over gRPC too.
		_, err = c.GetNode(ctx, connect.NewRequest(&quarryv1.GetNodeRequest{Id: "node-missing"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("GetNode of a missing node over gRPC: %v, want not_found", err)
		}
	})

	t.Run("grpc-web", func(t *testing.T) {
		c := quarryv1connect.NewNodeServiceClient(srv.HTTP, srv.URL, connect.WithGRPCWeb())
		resp, err := c.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		checkList(t, resp.Msg.GetNodes())
	})

	t.Run("curl", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("curl is not installed")
		}
		out, err := exec.CommandContext(ctx, curl, "-sS", "--fail-with-body",
			"-H", "Content-Type: application/json", "-H", "Authorization: Bearer "+srv.AdminToken, "-d", "{}",
			srv.URL+"/quarry.v1.NodeService/ListNodes").Output()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("curl answer is not JSON: %v\n%s", err, out)
		}
		nodes := jsonNodes(t, m)
		if len(nodes) != 1 || nodes[0]["id"] != id || nodes[0]["name"] != "n1" {
			t.Fatalf("curl ListNodes = %s, want node %s n1", out, id)
		}
	})
}

// httpGet fetches url and returns the status, content type and body.
func httpGet(t *testing.T, ctx context.Context, url string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

func TestAPIEndpoints(t *testing.T) {
	srv := quarrytest.StartServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _, body := httpGet(t, ctx, srv.URL+path); code != http.StatusOK {
			t.Errorf("GET %s: HTTP %d: %s", path, code, body)
		}
	}

	code, ctype, body := httpGet(t, ctx, srv.URL+"/")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, "Quarry") {
		t.Errorf("GET /: HTTP %d, %s, want an HTML page mentioning Quarry:\n%s", code, ctype, body)
	}
	if code, _, _ := httpGet(t, ctx, srv.URL+"/no-such-page"); code != http.StatusNotFound {
		t.Errorf("GET /no-such-page: HTTP %d, want 404", code)
	}

	// One API call and one node to check, so both counters have samples:
	// the node registered by address, then its agent enrolled.
	agent := quarrytest.NewAgent(t, srv, quarrytest.AgentOptions{Name: "m1"})
	if _, err := srv.Nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{
		Name: "m1", ManagementAddress: agent.Addr,
	})); err != nil {
		t.Fatal(err)
	}
	agent.Start()
	quarrytest.Eventually(t, 15*time.Second, func() error {
		code, _, body := httpGet(t, ctx, srv.URL+"/metrics")
		if code != http.StatusOK {
			return fmt.Errorf("GET /metrics: HTTP %d", code)
		}
		for _, want := range []string{
			`quarry_api_requests_total{code="ok",procedure="/quarry.v1.NodeService/RegisterNode"} 1`,
			`quarry_node_checks_total{result="ok"}`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics does not contain %s", want)
			}
		}
		return nil
	})
}

func TestAPIAddressNormalization(t *testing.T) {
	srv := quarrytest.StartServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	tests := []struct {
		in, want string
	}{
		{"10.0.0.5/24", "10.0.0.5:9090"},
		{"10.0.0.6", "10.0.0.6:9090"},
		{"10.0.0.7:7000", "10.0.0.7:7000"},
		{" 10.0.0.8 ", "10.0.0.8:9090"},
		{"fd00::5/64", "[fd00::5]:9090"},
		{"fd00::6", "[fd00::6]:9090"},
		{"[fd00::5]:7000", "[fd00::5]:7000"},
		{"[fd00::7]", "[fd00::7]:9090"},
		{"FD00:0:0::A", "[fd00::a]:9090"},
		{"host.example:7000", "host.example:7000"},
		{"Host.Example", "host.example:9090"},
		{"node-1", "node-1:9090"},
	}
	want := map[string]string{} // node id → normalized address
	for i, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			resp, err := srv.Nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{
				Name: fmt.Sprintf("addr%d", i), ManagementAddress: tt.in,
			}))
			if err != nil {
				t.Fatalf("RegisterNode(%q): %v", tt.in, err)
			}
			n := resp.Msg.GetNode()
			if got := n.GetManagementAddress(); got != tt.want {
				t.Errorf("RegisterNode(%q) address = %q, want %q", tt.in, got, tt.want)
			}
			want[n.GetId()] = tt.want
		})
	}

	// What was stored is what the API shows later.
	resp, err := srv.Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Msg.GetNodes()) != len(want) {
		t.Errorf("ListNodes has %d nodes, want %d", len(resp.Msg.GetNodes()), len(want))
	}
	for _, n := range resp.Msg.GetNodes() {
		if n.GetManagementAddress() != want[n.GetId()] {
			t.Errorf("ListNodes: node %s address %q, want %q", n.GetName(), n.GetManagementAddress(), want[n.GetId()])
		}
	}

	// UpdateNode normalizes the same way.
	var id string
	for nid, addr := range want {
		if addr == "10.0.0.6:9090" {
			id = nid
		}
	}
	addr := "10.0.0.60/8"
	up, err := srv.Nodes.UpdateNode(ctx, connect.NewRequest(&quarryv1.UpdateNodeRequest{Id: id, ManagementAddress: &addr}))
	if err != nil {
		t.Fatal(err)
	}
	if got := up.Msg.GetNode().GetManagementAddress(); got != "10.0.0.60:9090" {
		t.Errorf("UpdateNode(%q) address = %q, want 10.0.0.60:9090", addr, got)
	}
}
