// Package simscale simulates a large cluster for `make bench-scale`: a
// Fleet of agents, each a real node API endpoint over mutual TLS with its
// own certificate enrolled through the control plane's public API, and the
// benchmark that drives a real control plane with it (bench.go).
//
// A simulated agent answers what the control plane asks of every node —
// facts and file events, pool initialization, ISO listings — from memory
// instead of a disk, so one process can play thousands of nodes. Each node
// has its own listener and address; the control plane dials, verifies and
// pins it exactly as it does a real agent. A node can be taken down (its
// connections closed, new ones refused after accept, like a dead agent
// whose port another process holds) and brought back, when it announces
// itself as a restarted agent does.
//
// It is not part of the shipped binary: cmd/quarry-simscale runs it.
package simscale

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/pki"
)

// Fleet is a set of simulated agents and the pools they mount.
type Fleet struct {
	// ISOsPerPool is how many ISO files every mounted pool holds.
	ISOsPerPool int

	nodes []*Node

	mu      sync.Mutex
	mounts  map[string]map[string]bool // node name -> pool paths it mounts
	markers map[string]string          // pool path -> pool id, once initialized
	isos    map[string][]*agentv1.IsoFile

	once sync.Once
	mux  *http.ServeMux
}

// NewFleet returns an empty fleet whose pools hold isosPerPool ISOs each.
func NewFleet(isosPerPool int) *Fleet {
	return &Fleet{ISOsPerPool: isosPerPool, mounts: map[string]map[string]bool{},
		markers: map[string]string{}, isos: map[string][]*agentv1.IsoFile{}}
}

// Nodes returns the fleet's nodes in the order they were added.
func (f *Fleet) Nodes() []*Node { return f.nodes }

// Mount makes node name see the pool directory path (before or after the
// pool is created in the control plane).
func (f *Fleet) Mount(name, path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mounts[name] == nil {
		f.mounts[name] = map[string]bool{}
	}
	f.mounts[name][path] = true
}

func (f *Fleet) mounted(name, path string) (mounted bool, marker string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mounts[name][path], f.markers[path]
}

// files returns the ISO listing of the pool at path, the same every time:
// a rescan finds nothing changed.
func (f *Fleet) files(path string) []*agentv1.IsoFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fs, ok := f.isos[path]; ok {
		return fs
	}
	base := path[strings.LastIndexByte(path, '/')+1:]
	mod := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	fs := make([]*agentv1.IsoFile, f.ISOsPerPool)
	for i := range fs {
		fs[i] = &agentv1.IsoFile{
			RelPath: fmt.Sprintf("iso/%s-debian-13.%d-amd64-netinst.iso", base, i),
			Size:    int64(700<<20 + i), ModTime: mod,
			Label: fmt.Sprintf("Debian 13.%d amd64 n", i), Bootable: true, Settled: true,
		}
	}
	f.isos[path] = fs
	return fs
}

// Node is one simulated agent.
type Node struct {
	Name string
	// ID is the node id the control plane gave it at enrollment.
	ID string
	// Addr is its management address (127.0.0.1:port).
	Addr string

	fleet  *Fleet
	ln     net.Listener
	srv    *http.Server
	cert   *tls.Certificate
	server string // control plane URL, to announce to
	hc     *http.Client

	down  atomic.Bool
	hung  atomic.Bool
	held  []net.Conn   // accepted while hung, never answered
	facts atomic.Int64 // GetFacts calls answered
	// While answers are held (Hold), GetFacts waits for hold to close.
	hold    atomic.Pointer[chan struct{}]
	waiting atomic.Int64 // GetFacts calls waiting for hold
	mu      sync.Mutex
	// Its file events (guarded by mu): the log's name, new at every Up,
	// the pools it watches and the number of events logged.
	events   string
	watched  map[string]bool
	seq      uint64
	conns    map[net.Conn]struct{}
	maxConns int
	accepted int
}

// Listen opens the listeners of n new nodes named prefix-00001… (their
// addresses are known before they enroll, as an agent's listen address is).
func (f *Fleet) Listen(prefix string, n int) error {
	width := len(fmt.Sprint(n))
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("listening for simulated node %d: %w (raise ulimit -n?)", i, err)
		}
		nd := &Node{Name: fmt.Sprintf("%s-%0*d", prefix, width, i+1), Addr: ln.Addr().String(), fleet: f, ln: ln, conns: map[net.Conn]struct{}{}}
		f.nodes = append(f.nodes, nd)
	}
	return nil
}

// Enroll enrolls every node with the join token through the control
// plane's public API, parallel at most workers at a time, and starts
// serving each one as soon as it holds its certificate.
func (f *Fleet) Enroll(ctx context.Context, server, joinToken string, workers int) error {
	hc := &http.Client{Timeout: 60 * time.Second}
	client := quarryv1connect.NewEnrollmentServiceClient(hc, server)
	work := make(chan *Node)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for nd := range work {
				if err := nd.enroll(ctx, client, joinToken); err != nil {
					errc <- err
					return
				}
				nd.server, nd.hc = server, hc
				nd.serve()
			}
			errc <- nil
		})
	}
	var err error
feed:
	for _, nd := range f.nodes {
		select {
		case work <- nd:
		case err = <-errc:
			if err != nil {
				break feed
			}
		}
	}
	close(work)
	wg.Wait()
	close(errc)
	for e := range errc {
		err = errors.Join(err, e)
	}
	return err
}

func (nd *Node) enroll(ctx context.Context, client quarryv1connect.EnrollmentServiceClient, joinToken string) error {
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.CreateCSR(key, nd.Name)
	if err != nil {
		return err
	}
	resp, err := client.Enroll(ctx, connect.NewRequest(&quarryv1.EnrollRequest{
		JoinToken: joinToken, NodeName: nd.Name, ManagementAddress: nd.Addr, CsrPem: string(csr)}))
	if err != nil {
		return fmt.Errorf("enrolling %s: %w", nd.Name, err)
	}
	cert, err := pki.ParseCert([]byte(resp.Msg.GetCertificatePem()))
	if err != nil {
		return fmt.Errorf("the certificate of %s: %w", nd.Name, err)
	}
	ca, err := pki.ParseCert([]byte(resp.Msg.GetCaPem()))
	if err != nil {
		return fmt.Errorf("the CA: %w", err)
	}
	if !pki.SameKey(cert, key) || pki.NodeID(cert) != resp.Msg.GetNodeId() {
		return fmt.Errorf("enrolling %s: the certificate is not for its key or node", nd.Name)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	nd.ID = resp.Msg.GetNodeId()
	nd.cert = &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	nd.srv = &http.Server{
		Handler:           nd.fleet.handler(nd),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		Protocols:         new(http.Protocols),
		// The same server configuration as a real agent's: only the
		// control plane's certificate from this CA gets an answer.
		TLSConfig: pki.AgentServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nd.cert, nil }, roots),
		ErrorLog:  log.New(io.Discard, "", 0),
		ConnState: nd.connState,
	}
	nd.srv.Protocols.SetHTTP1(true)
	nd.srv.Protocols.SetHTTP2(true)
	return nil
}

func (nd *Node) serve() {
	go nd.srv.ServeTLS(downListener{nd.ln, nd}, "", "") //nolint:errcheck // ends with Close
}

// downListener hands the server no connection while its node is down: they
// are accepted and closed at once, as by a port nobody serves TLS on.
type downListener struct {
	net.Listener
	nd *Node
}

func (l downListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		switch {
		case err != nil:
			return c, err
		case l.nd.hung.Load():
			l.nd.mu.Lock()
			l.nd.held = append(l.nd.held, c)
			l.nd.mu.Unlock()
		case l.nd.down.Load():
			c.Close()
		default:
			return c, nil
		}
	}
}

func (nd *Node) connState(c net.Conn, s http.ConnState) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	switch s {
	case http.StateNew:
		nd.conns[c] = struct{}{}
		nd.accepted++
		nd.maxConns = max(nd.maxConns, len(nd.conns))
	case http.StateClosed, http.StateHijacked:
		delete(nd.conns, c)
	}
}

// Conns returns the node's open connections now, the most it had open at
// once, and how many it accepted in all.
func (nd *Node) Conns() (open, most, accepted int) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return len(nd.conns), nd.maxConns, nd.accepted
}

// FactsAnswered is how many GetFacts calls (health checks) the node answered.
func (nd *Node) FactsAnswered() int64 { return nd.facts.Load() }

// Down makes the node stop answering: its open connections are closed and
// new ones are closed as soon as they are accepted.
func (nd *Node) Down() {
	nd.down.Store(true)
	nd.mu.Lock()
	for c := range nd.conns {
		c.Close()
	}
	nd.mu.Unlock()
}

// Hang makes the node a hung agent (a stopped process, a cut network that
// drops packets): its open connections are closed, and new ones are
// accepted by the kernel and never answered.
func (nd *Node) Hang() {
	nd.hung.Store(true)
	nd.mu.Lock()
	for c := range nd.conns {
		c.Close()
	}
	nd.mu.Unlock()
}

// Hold makes the node's answers to health checks wait until release is
// called (or the check gives up): a check kept in flight for as long as a
// test needs. Release may be called more than once.
func (nd *Node) Hold() (release func()) {
	ch := make(chan struct{})
	nd.hold.Store(&ch)
	return sync.OnceFunc(func() {
		nd.hold.Store(nil)
		close(ch)
	})
}

// Waiting is how many health checks wait for their answer (see Hold).
func (nd *Node) Waiting() int64 { return nd.waiting.Load() }

// fileEvents answers a check that asks for file events after cursor c,
// with the pools it reported, as the real agent does. Nothing changes on
// a simulated disk: the only events are the overflows (rescans) of the
// pools it starts to watch (here: reports as mounted for the first time
// since its last Up), and a caller new to the node's log is told to
// rescan every pool it mounts.
func (nd *Node) fileEvents(c *agentv1.EventCursor, pools []*agentv1.PoolFacts) ([]*agentv1.PoolEvent, *agentv1.EventCursor) {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.events == "" {
		nd.events, nd.watched, nd.seq = rand.Text(), map[string]bool{}, 0
	}
	var evs []*agentv1.PoolEvent
	for _, pf := range pools {
		if pf.GetMounted() && !nd.watched[pf.GetId()] {
			nd.watched[pf.GetId()] = true
			nd.seq++
			evs = append(evs, &agentv1.PoolEvent{PoolId: pf.GetId(), Op: agentv1.FileOp_FILE_OP_OVERFLOW})
		}
	}
	if c.GetLog() != nd.events {
		evs = evs[:0]
		for _, pf := range pools {
			if pf.GetMounted() {
				evs = append(evs, &agentv1.PoolEvent{PoolId: pf.GetId(), Op: agentv1.FileOp_FILE_OP_OVERFLOW})
			}
		}
	}
	return evs, &agentv1.EventCursor{Log: nd.events, Seq: nd.seq}
}

// Up makes the node answer again and tells the control plane, as a
// restarted agent does (the control plane then checks it at once, and
// collects its file events from a new log).
func (nd *Node) Up(ctx context.Context) error {
	nd.down.Store(false)
	nd.hung.Store(false)
	nd.mu.Lock()
	nd.events = ""
	for _, c := range nd.held {
		c.Close()
	}
	nd.held = nil
	nd.mu.Unlock()
	client := quarryv1connect.NewEnrollmentServiceClient(nd.hc, nd.server)
	_, err := client.Announce(ctx, connect.NewRequest(&quarryv1.AnnounceRequest{NodeId: nd.ID}))
	return err
}

// Close stops serving the node.
func (nd *Node) Close() error {
	nd.mu.Lock()
	for _, c := range nd.held {
		c.Close()
	}
	nd.held = nil
	nd.mu.Unlock()
	if nd.srv != nil {
		return nd.srv.Close()
	}
	return nd.ln.Close()
}

// Close stops every node.
func (f *Fleet) Close() {
	for _, nd := range f.nodes {
		nd.Close() //nolint:errcheck // best effort at the end
	}
}

// handler serves nd with the fleet's one agent API handler: a handler per
// node would keep a pool of gzip compressors per node, gigabytes for the
// fleet, where a real agent has one.
func (f *Fleet) handler(nd *Node) http.Handler {
	f.once.Do(func() {
		path, h := agentv1connect.NewAgentServiceHandler(agentService{})
		mux := http.NewServeMux()
		mux.Handle(path, h)
		f.mux = mux
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nodeKey{}, nd)))
	})
}

type nodeKey struct{}

// agentService answers the control plane's calls for the node in the
// request's context.
type agentService struct {
	agentv1connect.UnimplementedAgentServiceHandler
}

func node(ctx context.Context) *Node { return ctx.Value(nodeKey{}).(*Node) }

const (
	simFree  = 3 << 40
	simTotal = 4 << 40
)

func (nd *Node) poolFacts(ref *agentv1.PoolRef) *agentv1.PoolFacts {
	pf := &agentv1.PoolFacts{Id: ref.GetId()}
	mounted, marker := nd.fleet.mounted(nd.Name, ref.GetPath())
	switch {
	case !mounted:
		pf.Status, pf.Reason = agentv1.MountStatus_MOUNT_STATUS_MISSING, ref.GetPath()+" does not exist on this node"
	case marker == "":
		pf.Status, pf.Reason = agentv1.MountStatus_MOUNT_STATUS_NO_MARKER, "the directory has no pool marker yet"
	case marker != ref.GetId():
		pf.Status, pf.Reason = agentv1.MountStatus_MOUNT_STATUS_OTHER_POOL, "the directory holds the marker of pool "+marker
	default:
		pf.Status, pf.Mounted, pf.FreeBytes, pf.TotalBytes = agentv1.MountStatus_MOUNT_STATUS_MOUNTED, true, simFree, simTotal
	}
	return pf
}

func (agentService) GetFacts(ctx context.Context, req *connect.Request[agentv1.GetFactsRequest]) (*connect.Response[agentv1.GetFactsResponse], error) {
	nd := node(ctx)
	nd.facts.Add(1)
	if hold := nd.hold.Load(); hold != nil {
		nd.waiting.Add(1)
		select {
		case <-*hold:
		case <-ctx.Done():
		}
		nd.waiting.Add(-1)
	}
	resp := &agentv1.GetFactsResponse{Hostname: nd.Name, Version: "simscale"}
	for _, ref := range req.Msg.GetPools() {
		resp.Pools = append(resp.Pools, nd.poolFacts(ref))
	}
	if c := req.Msg.GetEvents(); c != nil {
		resp.Events, resp.EventsCursor = nd.fileEvents(c, resp.Pools)
	}
	return connect.NewResponse(resp), nil
}

func (agentService) InitPool(ctx context.Context, req *connect.Request[agentv1.InitPoolRequest]) (*connect.Response[agentv1.InitPoolResponse], error) {
	nd, ref := node(ctx), req.Msg.GetPool()
	f := nd.fleet
	f.mu.Lock()
	if f.mounts[nd.Name][ref.GetPath()] && f.markers[ref.GetPath()] == "" {
		f.markers[ref.GetPath()] = ref.GetId()
	}
	f.mu.Unlock()
	return connect.NewResponse(&agentv1.InitPoolResponse{Pool: nd.poolFacts(ref)}), nil
}

// listBatch is the real agent's batch size for ISO listings.
const listBatch = 512

func (agentService) ListISOs(ctx context.Context, req *connect.Request[agentv1.ListISOsRequest], stream *connect.ServerStream[agentv1.ListISOsResponse]) error {
	nd := node(ctx)
	pf := nd.poolFacts(req.Msg.GetPool())
	if !pf.GetMounted() {
		return connect.NewError(connect.CodeFailedPrecondition, errors.New(pf.GetReason()))
	}
	files := nd.fleet.files(req.Msg.GetPool().GetPath())
	for len(files) > 0 {
		n := min(len(files), listBatch)
		if err := stream.Send(&agentv1.ListISOsResponse{Files: files[:n]}); err != nil {
			return err
		}
		files = files[n:]
	}
	return nil
}
