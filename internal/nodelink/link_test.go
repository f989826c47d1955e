package nodelink_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// TestNeverReinitialize: once a pool's marker was written, the link never
// writes another, even when the marker vanishes (a shared filesystem that is
// not mounted): a new marker would make whatever directory is there look
// like the pool.
func TestNeverReinitialize(t *testing.T) {
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	dir := a.Opts.LocalPath("/srv/isos")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	nodeID := a.NodeID
	created, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "isos", Path: "/srv/isos", AssignedNodeIds: []string{nodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	pool := created.Msg.GetPool()
	if pool.GetInitializedByNodeId() != nodeID {
		t.Fatalf("initialized by %q, want %s", pool.GetInitializedByNodeId(), nodeID)
	}
	marker := filepath.Join(dir, ".quarry", "pool.json")
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}

	// Let several health rounds pass, each of which sees the missing marker.
	var checks []time.Time
	quarrytest.Eventually(t, 10*time.Second, func() error {
		resp, err := s.Pools.GetPool(t.Context(), connect.NewRequest(&quarryv1.GetPoolRequest{Id: pool.GetId()}))
		if err != nil {
			return err
		}
		m := resp.Msg.GetPool().GetNodes()[0]
		if m.GetMounted() || !strings.Contains(m.GetReason(), "holds no pool marker") {
			return fmt.Errorf("n1: mounted=%v %q", m.GetMounted(), m.GetReason())
		}
		if at := m.GetCheckedAt().AsTime(); len(checks) == 0 || at.After(checks[len(checks)-1]) {
			checks = append(checks, at)
		}
		if len(checks) < 4 {
			return fmt.Errorf("%d checks seen", len(checks))
		}
		return nil
	})
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the marker was written again: %v", err)
	}
	resp, err := s.Pools.GetPool(t.Context(), connect.NewRequest(&quarryv1.GetPoolRequest{Id: pool.GetId()}))
	if err != nil || resp.Msg.GetPool().GetInitializedByNodeId() != nodeID {
		t.Fatalf("initialized by changed: %v, %v", resp.Msg.GetPool().GetInitializedByNodeId(), err)
	}
}

// TestOneConnectionPerNode: calls made at once to a node the link holds no
// connection to share the one connection the first of them opens, and so
// do those after the node closed it (as when it flapped): the link never
// has two connections to a node open.
func TestOneConnectionPerNode(t *testing.T) {
	s := quarrytest.StartServer(t)
	var ln *flapListener
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1", Listener: func(l net.Listener) net.Listener {
		ln = &flapListener{Listener: l, open: map[net.Conn]bool{}}
		return ln
	}})
	l := nodelink.New(nodelink.Config{Store: s.Store, Issuer: testIssuer(t, s.CA), Logger: quarrytest.Logger(t)})
	nowhere := store.Pool{ID: "pool-nowhere", Name: "nowhere", Path: "/srv/nowhere"}
	// Others have connections to the node already: the control plane's
	// link, and the client StartAgent waited for the agent with.
	others := ln.most()
	for round := range 4 {
		if round > 0 {
			ln.closeAll()
		}
		var calls sync.WaitGroup
		for range 16 {
			// Answered by the agent (the pool is not there) over the link;
			// the calls that meet a connection the node just closed fail.
			calls.Go(func() { _ = l.DeleteFile(t.Context(), a.NodeID, nowhere, "iso/x.iso") })
		}
		calls.Wait()
		if most := ln.most(); most > others+1 {
			t.Fatalf("round %d: with 16 calls at once the node had %d connections open at once, want at most %d (one more than before the link's calls)", round, most, others+1)
		}
	}
	if n := nodelink.OpenConns(l, a.NodeID); n > 1 {
		t.Errorf("the link holds %d connections to the node, want 1", n)
	}
}

// flapListener tracks the connections it accepted, to close them all.
type flapListener struct {
	net.Listener
	mu      sync.Mutex
	open    map[net.Conn]bool
	mostNow int
}

func (l *flapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c = &trackedConn{Conn: c, l: l}
	l.open[c] = true
	l.mostNow = max(l.mostNow, len(l.open))
	return c, nil
}

// most is the most connections open at once.
func (l *flapListener) most() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mostNow
}

// closeAll closes every open connection, as a node going down does.
func (l *flapListener) closeAll() {
	l.mu.Lock()
	open := l.open
	l.open = map[net.Conn]bool{}
	l.mu.Unlock()
	for c := range open {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l *flapListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.open, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
