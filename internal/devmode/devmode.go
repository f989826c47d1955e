// Package devmode runs everything on one machine for a first try: the
// control plane, an in-process agent enrolled as node "dev", and a local
// pool "local" under the data directory, all on loopback. It wires the
// production server and agent together: the agent enrolls with a join token
// through the Enroll RPC and serves mutual TLS, and the node and pool are
// set up through the public API, so it exercises the same code paths as a
// real cluster. The setup is the control plane's own: it calls in process,
// audited as "system (dev mode)", and changes only what is not set up yet.
package devmode

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/agent"
	"github.com/quarry-project/quarry/internal/auth"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/server"
	"github.com/quarry-project/quarry/internal/store"
)

// Names of what dev mode sets up.
const (
	NodeName = "dev"
	PoolName = "local"
)

// Run starts dev mode and blocks until ctx is done. ready, if not nil, is
// called with the API's base URL once everything is set up.
func Run(ctx context.Context, cfg server.Config, out io.Writer, ready func(baseURL string)) error {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if err := checkLoopback(cfg.Listen); err != nil {
		return err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w (is another quarry server running? pick another address with --listen)", cfg.Listen, err)
	}
	base := "http://" + ln.Addr().String()
	ag, err := agent.New(agent.Config{
		DataDir: filepath.Join(cfg.DataDir, "agent"),
		Version: cfg.Version,
		Logger:  log.With("component", "agent"),
		Enrollment: agent.Enrollment{
			Server: base,
			Name:   NodeName,
			CAHash: srv.CA().Hash(),
		},
	})
	if err != nil {
		ln.Close()
		return err
	}
	agentLn, err := listenAgent(ctx, srv)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listening for the dev agent: %w", err)
	}

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ctx, ln) }()
	if err := enroll(ctx, srv, ag, agentLn.Addr().String()); err != nil {
		cancel()
		agentLn.Close()
		<-errc
		return fmt.Errorf("enrolling the dev agent: %w", err)
	}
	go func() { errc <- ag.Serve(ctx, agentLn) }()

	if err := setup(ctx, srv.SystemClient("dev mode"), base, agentLn.Addr().String(), cfg.DataDir); err != nil {
		cancel()
		<-errc
		<-errc
		return fmt.Errorf("setting up dev mode: %w", err)
	}
	fmt.Fprintf(out, `Quarry is running in dev mode (everything on this machine, loopback only).
  API and web page: %s/
  node %-12s agent at %s
  pool %-12s %s
  data directory:   %s
  admin token:      %s
Try:  export QUARRY_SERVER=%s QUARRY_TOKEN=$(cat %s)
      quarry node ls; quarry pool show %s; quarry image ls
Copy an ISO into %s/iso/ and it shows up in quarry image ls.
Stop with Ctrl-C.
`, base, fmt.Sprintf("%q:", NodeName), agentLn.Addr(), fmt.Sprintf("%q:", PoolName), poolPath(cfg.DataDir), cfg.DataDir,
		auth.AdminTokenPath(cfg.DataDir), base, auth.AdminTokenPath(cfg.DataDir), PoolName, poolPath(cfg.DataDir))
	if ready != nil {
		ready(base)
	}
	err = <-errc
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

func poolPath(dataDir string) string { return filepath.Join(dataDir, "pools", PoolName) }

// enroll enrolls the dev agent, as an operator would: a single-use join
// token, then the agent's Enroll call to the control plane. An agent that
// holds a valid certificate from this control plane's CA for a node that
// still exists (a restart on the same data directory) needs none.
func enroll(ctx context.Context, srv *server.Server, ag *agent.Agent, addr string) error {
	now := time.Now()
	if cert := ag.Certificate(); cert != nil && ag.CAHash() == srv.CA().Hash() && now.Before(cert.NotAfter) {
		if _, err := srv.Store().GetNode(ctx, ag.NodeID()); err == nil {
			return nil
		}
	}
	tok, secret := auth.New(store.TokenJoin)
	tok.Name, tok.CreatedAt, tok.ExpiresAt, tok.SingleUse = "dev-agent", now, now.Add(10*time.Minute), true
	if err := srv.Store().CreateToken(ctx, tok); err != nil {
		return err
	}
	return ag.Enroll(ctx, secret, addr)
}

// listenAgent listens for the dev agent where node dev was last time, so
// that a restart leaves the node as it is; on another port when that one is
// taken (or on the first start).
func listenAgent(ctx context.Context, srv *server.Server) (net.Listener, error) {
	if n, err := srv.Store().GetNodeByName(ctx, NodeName); err == nil {
		if host, _, err := net.SplitHostPort(n.Address); err == nil && host == "127.0.0.1" {
			if ln, err := net.Listen("tcp", n.Address); err == nil {
				return ln, nil
			}
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

func checkLoopback(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", listen, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--dev listens on loopback only; --listen %q is not a loopback address (use 127.0.0.1:PORT)", listen)
}

// setup moves the dev node to the agent's address and creates the local
// pool, through the public API as the control plane's own code (audited as
// "system (dev mode)"), and only what is not so already: a restart that
// finds both as they should be changes nothing and records nothing.
func setup(ctx context.Context, hc *http.Client, base, agentAddr, dataDir string) error {
	nodes := quarryv1connect.NewNodeServiceClient(hc, base)
	pools := quarryv1connect.NewStoragePoolServiceClient(hc, base)

	// The search narrows the list to names containing NodeName: one page.
	list, err := nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{Search: NodeName, PageSize: 1000}))
	if err != nil {
		return err
	}
	var nodeID string
	for _, n := range list.Msg.GetNodes() {
		if n.GetName() != NodeName {
			continue
		}
		nodeID = n.GetId()
		if n.GetManagementAddress() != agentAddr {
			if _, err := nodes.UpdateNode(ctx, connect.NewRequest(&quarryv1.UpdateNodeRequest{Id: nodeID, ManagementAddress: &agentAddr})); err != nil {
				return err
			}
		}
	}
	if nodeID == "" {
		resp, err := nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: NodeName, ManagementAddress: agentAddr}))
		if err != nil {
			return err
		}
		nodeID = resp.Msg.GetNode().GetId()
	}

	path := poolPath(dataDir)
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	existing, err := pools.ListPools(ctx, connect.NewRequest(&quarryv1.ListPoolsRequest{}))
	if err != nil {
		return err
	}
	for _, p := range existing.Msg.GetPools() {
		if p.GetName() == PoolName {
			return nil
		}
	}
	_, err = pools.CreatePool(ctx, connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: PoolName, Path: path, AssignedNodeIds: []string{nodeID},
	}))
	return err
}
