package e2e

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// specState is what the API says about every node and pool, without what
// the health loop changes on its own (state, check times, mount facts):
// what a refused request must leave exactly as it was.
type specState struct {
	nodes []*quarryv1.Node
	pools []*quarryv1.StoragePool
}

func readSpec(t *testing.T, ctx context.Context, srv *quarrytest.Server) specState {
	t.Helper()
	nr, err := srv.Nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	pr, err := srv.Pools.ListPools(ctx, connect.NewRequest(&quarryv1.ListPoolsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var s specState
	for _, n := range nr.Msg.GetNodes() {
		n = proto.CloneOf(n)
		n.State, n.StateReason, n.StateSince, n.LastCheckedAt = 0, "", nil, nil
		n.Hostname, n.AgentVersion, n.Pools = "", "", nil
		s.nodes = append(s.nodes, n)
	}
	for _, p := range pr.Msg.GetPools() {
		p = proto.CloneOf(p)
		p.Nodes = nil
		s.pools = append(s.pools, p)
	}
	return s
}

// assertUnchanged fails unless before and after list equal nodes and pools.
func assertUnchanged(t *testing.T, before, after specState) {
	t.Helper()
	if len(before.nodes) != len(after.nodes) || len(before.pools) != len(after.pools) {
		t.Fatalf("the request changed the store: %d nodes and %d pools before, %d and %d after",
			len(before.nodes), len(before.pools), len(after.nodes), len(after.pools))
	}
	for i := range before.nodes {
		if !proto.Equal(before.nodes[i], after.nodes[i]) {
			t.Errorf("the request changed a node:\nbefore %v\nafter  %v", before.nodes[i], after.nodes[i])
		}
	}
	for i := range before.pools {
		if !proto.Equal(before.pools[i], after.pools[i]) {
			t.Errorf("the request changed a pool:\nbefore %v\nafter  %v", before.pools[i], after.pools[i])
		}
	}
}

func TestBadInput(t *testing.T) {
	srv := quarrytest.StartServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	nodes, pools := srv.Nodes, srv.Pools

	// The cluster the bad requests run against: n1 (a real agent) assigned
	// to pool isos, n2 at 10.0.0.5:9090, and the unassigned pool images.
	agent := quarrytest.StartAgent(t, srv, quarrytest.AgentOptions{Name: "n1"})
	register := func(name, addr string) string {
		resp, err := nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: name, ManagementAddress: addr}))
		if err != nil {
			t.Fatalf("RegisterNode %s: %v", name, err)
		}
		return resp.Msg.GetNode().GetId()
	}
	n1 := agent.NodeID // registered by its enrollment
	register("n2", "10.0.0.5")
	create := func(req *quarryv1.CreatePoolRequest) string {
		resp, err := pools.CreatePool(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("CreatePool %s: %v", req.GetName(), err)
		}
		return resp.Msg.GetPool().GetId()
	}
	isos := create(&quarryv1.CreatePoolRequest{Name: "isos", Path: "/srv/isos", AssignedNodeIds: []string{n1}})
	images := create(&quarryv1.CreatePoolRequest{Name: "images", Path: "/srv/images"})

	regNode := func(name, addr string) func() error {
		return func() error {
			_, err := nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: name, ManagementAddress: addr}))
			return err
		}
	}
	createPool := func(req *quarryv1.CreatePoolRequest) func() error {
		return func() error {
			_, err := pools.CreatePool(ctx, connect.NewRequest(req))
			return err
		}
	}
	updatePool := func(req *quarryv1.UpdatePoolRequest) func() error {
		return func() error {
			_, err := pools.UpdatePool(ctx, connect.NewRequest(req))
			return err
		}
	}
	str := func(s string) *string { return &s }

	tests := []struct {
		name string
		call func() error
		code connect.Code
		msg  string // a fragment of the message that tells the caller what to do
	}{
		{"register/empty name", regNode("", "10.0.0.9"), connect.CodeInvalidArgument, "node name is empty"},
		{"register/slash in name", regNode("a/b", "10.0.0.9"), connect.CodeInvalidArgument, "use only letters, digits"},
		{"register/long name", regNode(strings.Repeat("n", 64), "10.0.0.9"), connect.CodeInvalidArgument, "the limit is 63"},
		{"register/duplicate name", regNode("n1", "10.0.0.9"), connect.CodeAlreadyExists, `a node named "n1" already exists`},
		{"register/duplicate normalized address", regNode("n3", "10.0.0.5:9090"), connect.CodeAlreadyExists,
			`node "n2" already has the management address 10.0.0.5:9090`},
		{"register/duplicate address as CIDR", regNode("n3", "10.0.0.5/16"), connect.CodeAlreadyExists, "already has the management address"},
		{"register/empty address", regNode("n3", ""), connect.CodeInvalidArgument, "management address is empty"},
		{"register/URL", regNode("n3", "http://x"), connect.CodeInvalidArgument, "is a URL; give host or host:port"},
		{"register/port out of range", regNode("n3", "10.0.0.5:99999"), connect.CodeInvalidArgument, "not a number from 1 to 65535"},
		{"register/space in host", regNode("n3", "a b"), connect.CodeInvalidArgument, "not a valid host name"},
		{"register/unclosed bracket", regNode("n3", "[fd00::1"), connect.CodeInvalidArgument, "missing ]"},
		{"register/unbracketed IPv6 with port", regNode("n3", "fd00::1::9090"), connect.CodeInvalidArgument, "must be bracketed"},

		{"create/empty name", createPool(&quarryv1.CreatePoolRequest{Path: "/srv/x"}), connect.CodeInvalidArgument, "pool name is empty"},
		{"create/duplicate name", createPool(&quarryv1.CreatePoolRequest{Name: "isos", Path: "/srv/x"}), connect.CodeAlreadyExists,
			`a pool named "isos" already exists`},
		{"create/relative path", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "srv/x"}), connect.CodeInvalidArgument,
			"is relative; give an absolute path"},
		{"create/empty path", createPool(&quarryv1.CreatePoolRequest{Name: "x"}), connect.CodeInvalidArgument, "pool path is empty"},
		{"create/unclean path", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/srv/x/"}), connect.CodeInvalidArgument,
			`did you mean "/srv/x"?`},
		{"create/dotdot path", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/srv/../etc"}), connect.CodeInvalidArgument, "is not clean"},
		{"create/root path", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/"}), connect.CodeInvalidArgument,
			"cannot be the filesystem root"},
		{"create/etc", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/etc"}), connect.CodeInvalidArgument,
			"is in the system directory /etc; images there could overwrite"},
		{"create/proc", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/proc"}), connect.CodeInvalidArgument, "system directory /proc"},
		{"create/under sys", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/sys/kernel"}), connect.CodeInvalidArgument, "system directory /sys"},
		{"create/dev", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/dev"}), connect.CodeInvalidArgument, "system directory /dev"},
		{"create/usr lib", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/usr/lib/images"}), connect.CodeInvalidArgument, "system directory /usr"},
		{"create/server data dir", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: srv.DataDir}), connect.CodeInvalidArgument,
			"overlaps the control plane's data directory"},
		{"create/in server data dir", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: srv.DataDir + "/ca"}), connect.CodeInvalidArgument,
			"overlaps the control plane's data directory"},
		{"create/duplicate path", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/srv/isos"}), connect.CodeAlreadyExists,
			`pool "isos" already has the path /srv/isos`},
		{"create/nested in a pool", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/srv/isos/sub"}), connect.CodeInvalidArgument,
			`overlaps pool "isos"`},
		{"create/parent of a pool", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/srv"}), connect.CodeInvalidArgument,
			"pools cannot nest"},
		{"create/unknown node", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/srv/x", AssignedNodeIds: []string{"node-nope"}}),
			connect.CodeInvalidArgument, `assigned node "node-nope" does not exist`},
		{"create/node twice", createPool(&quarryv1.CreatePoolRequest{Name: "x", Path: "/srv/x", AssignedNodeIds: []string{n1, n1}}),
			connect.CodeInvalidArgument, "is assigned twice"},
		{"create/type nfs", createPool(&quarryv1.CreatePoolRequest{Name: "x", Type: "nfs", Path: "/srv/x"}), connect.CodeInvalidArgument,
			`pool type "nfs" is not supported`},

		{"update/unknown id", updatePool(&quarryv1.UpdatePoolRequest{Id: "pool-nope", Name: str("y")}), connect.CodeNotFound,
			`no pool has id "pool-nope"`},
		{"update/rename to taken name", updatePool(&quarryv1.UpdatePoolRequest{Id: images, Name: str("isos")}), connect.CodeAlreadyExists,
			`a pool named "isos" already exists`},
		{"update/bad name", updatePool(&quarryv1.UpdatePoolRequest{Id: images, Name: str("my images")}), connect.CodeInvalidArgument,
			"use only letters, digits"},
		{"update/assign unknown node", updatePool(&quarryv1.UpdatePoolRequest{Id: isos,
			AssignedNodeIds: &quarryv1.NodeIDs{Ids: []string{n1, "node-nope"}}}), connect.CodeInvalidArgument, "does not exist; see quarry node ls"},

		{"get node/unknown", func() error {
			_, err := nodes.GetNode(ctx, connect.NewRequest(&quarryv1.GetNodeRequest{Id: "node-nope"}))
			return err
		}, connect.CodeNotFound, `no node has id "node-nope"`},
		{"get node/empty id", func() error {
			_, err := nodes.GetNode(ctx, connect.NewRequest(&quarryv1.GetNodeRequest{}))
			return err
		}, connect.CodeInvalidArgument, "node id is empty"},
		{"get pool/unknown", func() error {
			_, err := pools.GetPool(ctx, connect.NewRequest(&quarryv1.GetPoolRequest{Id: "pool-nope"}))
			return err
		}, connect.CodeNotFound, `no pool has id "pool-nope"`},
		{"list images/unknown pool", func() error {
			_, err := srv.Images.ListImages(ctx, connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: "pool-nope"}))
			return err
		}, connect.CodeNotFound, `no pool has id "pool-nope"`},
		{"get pool/empty id", func() error {
			_, err := pools.GetPool(ctx, connect.NewRequest(&quarryv1.GetPoolRequest{}))
			return err
		}, connect.CodeInvalidArgument, "pool id is empty"},
		{"delete node/unknown", func() error {
			_, err := nodes.DeleteNode(ctx, connect.NewRequest(&quarryv1.DeleteNodeRequest{Id: "node-nope"}))
			return err
		}, connect.CodeNotFound, `no node has id "node-nope"`},
		{"delete node/empty id", func() error {
			_, err := nodes.DeleteNode(ctx, connect.NewRequest(&quarryv1.DeleteNodeRequest{Id: " "}))
			return err
		}, connect.CodeInvalidArgument, "node id is empty"},
		{"delete pool/unknown", func() error {
			_, err := pools.DeletePool(ctx, connect.NewRequest(&quarryv1.DeletePoolRequest{Id: "pool-nope"}))
			return err
		}, connect.CodeNotFound, `no pool has id "pool-nope"`},
		{"delete pool/empty id", func() error {
			_, err := pools.DeletePool(ctx, connect.NewRequest(&quarryv1.DeletePoolRequest{}))
			return err
		}, connect.CodeInvalidArgument, "pool id is empty"},
		{"delete node/assigned to a pool", func() error {
			_, err := nodes.DeleteNode(ctx, connect.NewRequest(&quarryv1.DeleteNodeRequest{Id: n1}))
			return err
		}, connect.CodeFailedPrecondition, "isos"},
		{"update node/unknown", func() error {
			_, err := nodes.UpdateNode(ctx, connect.NewRequest(&quarryv1.UpdateNodeRequest{Id: "node-nope", Name: str("z")}))
			return err
		}, connect.CodeNotFound, `no node has id "node-nope"`},
		{"update node/taken address", func() error {
			_, err := nodes.UpdateNode(ctx, connect.NewRequest(&quarryv1.UpdateNodeRequest{Id: n1, ManagementAddress: str("10.0.0.5/24")}))
			return err
		}, connect.CodeAlreadyExists, `node "n2" already has the management address 10.0.0.5:9090`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := readSpec(t, ctx, srv)
			err := tt.call()
			var ce *connect.Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a Connect error %v", err, tt.code)
			}
			if ce.Code() != tt.code || !strings.Contains(ce.Message(), tt.msg) {
				t.Errorf("got %v: %q, want %v with a message containing %q", ce.Code(), ce.Message(), tt.code, tt.msg)
			}
			assertUnchanged(t, before, readSpec(t, ctx, srv))
		})
	}

	t.Run("an existing pool without images lists empty", func(t *testing.T) {
		resp, err := srv.Images.ListImages(ctx, connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: images}))
		if err != nil || len(resp.Msg.GetImages()) != 0 {
			t.Errorf("ListImages of empty pool images: %v, %v; want no images, no error", resp, err)
		}
	})

	t.Run("delete assigned node says what to do", func(t *testing.T) {
		_, err := nodes.DeleteNode(ctx, connect.NewRequest(&quarryv1.DeleteNodeRequest{Id: n1}))
		if msg := connectMessage(err); !strings.Contains(msg, "isos") || !strings.Contains(msg, "quarry pool update") {
			t.Errorf("DeleteNode of an assigned node: %q, want it to name pool isos and how to unassign", msg)
		}
		if _, err := nodes.GetNode(ctx, connect.NewRequest(&quarryv1.GetNodeRequest{Id: n1})); err != nil {
			t.Errorf("node n1 is gone after a refused delete: %v", err)
		}
	})

	t.Run("request over 4 MiB", func(t *testing.T) {
		before := readSpec(t, ctx, srv)
		big := strings.Repeat("x", 5<<20)
		_, err := nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: big, ManagementAddress: "10.0.0.99"}))
		if err == nil {
			t.Fatal("a 5 MiB RegisterNode was accepted")
		}
		if c := connect.CodeOf(err); c != connect.CodeResourceExhausted {
			t.Errorf("a 5 MiB RegisterNode: %v, want resource_exhausted", err)
		}

		// The same as a plain JSON POST.
		body := `{"name":"` + big + `","managementAddress":"10.0.0.99"}`
		req, err := http.NewRequestWithContext(ctx, http.MethodPost,
			srv.URL+"/quarry.v1.NodeService/RegisterNode", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.HTTP.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("a 5 MiB JSON RegisterNode answered HTTP 200")
			}
		}
		assertUnchanged(t, before, readSpec(t, ctx, srv))
	})
}

// connectMessage is the message of a Connect error, or "" for nil.
func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	if err != nil {
		return err.Error()
	}
	return ""
}
