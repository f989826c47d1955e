// Package nodelink owns every connection from the control plane to the
// agents: it dials nodes at their normalized management address, checks
// their health on an interval, connects lazily when an operation needs a
// node that is not READY, initializes new pools through one node, and
// renews the agents' certificates before they expire.
//
// Every call is mutual TLS: each node is dialed with its own TLS
// configuration (Issuer.ClientTLS) that accepts only the certificate the
// control plane's CA signed for that node. A node whose agent has not
// enrolled is not dialed at all; it stays UNKNOWN and says how to enroll it.
//
// Node state lives in the store; the link is the only writer of it.
package nodelink

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unique"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
	"github.com/quarry-project/quarry/internal/store"
)

// Config configures a Link. Zero values take the documented defaults.
type Config struct {
	Store store.Store
	// Interval between health checks of a healthy node (default 5 s). Each
	// check is jittered by up to ±10 %.
	Interval time.Duration
	// MaxBackoff caps the retry delay of a failing node (default 6 × Interval).
	MaxBackoff time.Duration
	// CheckTimeout bounds one scheduled health check (default 3 s).
	CheckTimeout time.Duration
	// ConnectTimeout bounds a lazy connection (default 2 s).
	ConnectTimeout time.Duration
	// Concurrency is the least number of checks in flight (default 8);
	// the health loop allows one per 5 nodes, up to 1,024, beyond it.
	Concurrency int
	// Issuer is the control plane's CA: it makes the TLS configuration
	// every node is dialed with and signs renewed agent certificates.
	// Without it no node is dialed.
	Issuer Issuer
	// OnStateChange, if set, is called after a node's state changed and
	// was stored (READY, UNREACHABLE, UNKNOWN); it must not block.
	OnStateChange func(n store.Node)
	// HandEvents, if set, passes on an agent's word that its node has
	// file events when this link does not collect them (it handles no
	// events: another replica leads); it must not block.
	HandEvents func(nodeID string)
	// Registerer receives the link's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Issuer is what the link needs of the control plane's CA.
type Issuer interface {
	// ClientTLS returns the TLS configuration that dials node nodeID: it
	// presents the control plane's client certificate and accepts only a
	// certificate from the CA that names that node.
	ClientTLS(nodeID string) *tls.Config
	// SignNode signs an agent's certificate signing request (PEM) into a
	// certificate for node nodeID, issued at now.
	SignNode(csrPEM []byte, nodeID string, now time.Time) (*x509.Certificate, error)
}

// Link is the control plane's connection to every agent.
type Link struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	// agents is the one agent client of every node: each call goes to the
	// node whose connection its context carries (withConn). A client per
	// node cost tens of KiB each (one per RPC method inside), hundreds of
	// MiB at thousands of nodes.
	agents agentv1connect.AgentServiceClient
	// tr carries every node's calls: one connection pool, in which each
	// node's connections are kept under its conn's key (the node, its
	// address and the certificate pinned) and dialed by dialNode with that
	// node's TLS configuration. A transport per node cost about 6 KiB of
	// maps and pools each, 29 MB at 5,000 nodes.
	tr *http.Transport

	mu    sync.Mutex
	conns map[string]*conn      // by node id
	byKey map[string]*conn      // the same, by key
	nodes map[string]*nodeState // by node id
	kick  chan struct{}
	// events is who takes the nodes' file events (guarded by mu).
	events eventCursors
	// What the next kick checks now (guarded by mu): every node, or the
	// nodes named.
	kickAll bool
	kicked  map[string]bool
	// poolKicked says a pool changed since the health loop last listed
	// them (guarded by mu).
	poolKicked bool

	initMu sync.Mutex // one pool initialization at a time
}

// nodeState is the link's in-memory view of one node between checks.
type nodeState struct {
	checking sync.Mutex // one check of a node at a time

	// Guarded by Link.mu.
	inflight bool // the health loop is checking it
	// kickedInFlight: kicked while the health loop was checking it, to be
	// kicked again when that check ends (see unclaim).
	kickedInFlight bool
	failures       int
	next           time.Time // when the next scheduled check is due
	facts          *facts    // from the last successful check; nil: none since the last failure
	announced      time.Time // when its agent last said it started
	// recorded is the LastCheckedAt of the last check this link stored.
	recorded time.Time
	// Where the node's file events were last collected, for the events
	// handler of generation cursorGen (see HandleEvents).
	cursorLog string
	cursorSeq uint64
	cursorGen uint64
}

// facts is what a node said at a check, kept between checks. It holds
// only what the link reads later, with each string interned: thousands of
// nodes report on the same pools, with the same reasons.
type facts struct {
	qemuImg unique.Handle[string]
	pools   []poolFact
}

// poolFact is what a node said about one pool.
type poolFact struct {
	id      unique.Handle[string]
	mounted bool
	status  agentv1.MountStatus
	reason  unique.Handle[string]
}

func newFacts(resp *agentv1.GetFactsResponse) *facts {
	f := &facts{qemuImg: unique.Make(resp.GetQemuImgVersion()), pools: make([]poolFact, 0, len(resp.GetPools()))}
	for _, pf := range resp.GetPools() {
		f.pools = append(f.pools, poolFact{
			id: unique.Make(pf.GetId()), mounted: pf.GetMounted(), status: pf.GetStatus(), reason: unique.Make(pf.GetReason()),
		})
	}
	return f
}

// New returns a Link; call Run to start health monitoring.
func New(cfg Config) *Link {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 6 * cfg.Interval
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 3 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 2 * time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Link{
		agents: agentv1connect.NewAgentServiceClient(&http.Client{Transport: route{}}, "https://agent.invalid",
			// No gzip on the node link: its messages are small and it runs
			// on the cluster's network.
			connect.WithAcceptCompression("gzip", nil, nil)),
		cfg:     cfg,
		log:     cfg.Logger.With("component", "nodelink"),
		metrics: newMetrics(cfg.Registerer),
		conns:   map[string]*conn{},
		byKey:   map[string]*conn{},
		nodes:   map[string]*nodeState{},
		kick:    make(chan struct{}, 1),
		kicked:  map[string]bool{},
	}
	// HTTP/2 only, one connection per node: every call to a node shares
	// it. Without the bound, calls that found no connection (a node's
	// first, or those after it flapped) each dialed one, and the node kept
	// them all open.
	p := new(http.Protocols)
	p.SetHTTP2(true)
	l.tr = &http.Transport{
		DialTLSContext:      l.dialNode,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
		Protocols:           p,
		// A peer that stops answering (a hung agent, a cut network) is
		// noticed on an idle connection too: ping after two intervals of
		// silence, give up on the connection when the ping goes unanswered.
		// A healthy node's connection carries a check every interval (±10 %),
		// which answers for it: after one interval, half the gaps between
		// checks sent a ping, 600 a second at 5,000 nodes.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 2 * cfg.Interval, PingTimeout: cfg.CheckTimeout,
			// The node link's headers are few and small: no dynamic HPACK
			// table either way (a table of 1 byte holds no field). Even 512 B
			// tables, with their indexes, held tens of MiB at thousands of
			// nodes: Connect-Timeout-Ms changes with every call.
			MaxDecoderHeaderTableSize: linkHeaderTable, MaxEncoderHeaderTableSize: linkHeaderTable},
	}
	return l
}

// conn is the link's connection to one node at one address, whose TLS
// configuration accepts only that node's certificate: the connections the
// link's transport keeps under key, and the node's upload connections.
type conn struct {
	addr string
	// key is the host the link's transport pools the node's connections
	// under (the Host header is addr): a new address or certificate is a
	// new key, so no connection is ever used for another pin.
	key string
	// pin is the certificate the connection's handshakes accept: the one
	// the node's record held when it was made.
	pin store.NodeCertificate
	tr  *http.Transport // the link's
	// expired says the connections were closed once the certificate
	// pinned had expired (guarded by Link.mu).
	expired bool

	mu sync.Mutex
	// open holds the network connections dialed for key, until closed.
	open map[*dialed]struct{}
	// up carries an upload's writes (uploadwire): HTTP/1.1 on connections
	// of their own, whose request bodies go to the TLS connection as they
	// are, without HTTP/2's framing, flow control and the copies these take
	// on both sides. Made at the node's first upload.
	up *http.Client
	// tls makes the node's pinned configuration anew (made when needed: a
	// configuration kept per node is memory at thousands of nodes).
	tls            func() *tls.Config
	connectTimeout time.Duration
	// broken is called when one of the node's connections breaks.
	broken func()
}

// uploads returns the client of the connection's upload writes.
func (c *conn) uploads() *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up == nil {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		// The node's pinned configuration, without the HTTP/2 transport's
		// "h2": these connections speak HTTP/1.1.
		cfg := c.tls()
		cfg.NextProtos = []string{"http/1.1"}
		dialer := &net.Dialer{Timeout: c.connectTimeout, KeepAlive: 30 * time.Second}
		c.up = &http.Client{Transport: &http.Transport{
			DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialBatchedTLS(ctx, dialer, network, addr, cfg, c.connectTimeout)
			},
			TLSClientConfig:     cfg,
			TLSHandshakeTimeout: c.connectTimeout,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			Protocols:           p,
		}}
	}
	return c.up
}

// close closes the node's connections, calls in flight on them included
// (a download's progress stream is one): the next call dials anew, with a
// new handshake.
func (c *conn) close() {
	c.mu.Lock()
	open := c.open
	c.open = nil
	up := c.up
	c.mu.Unlock()
	for d := range open {
		d.Close()
	}
	if up != nil {
		up.CloseIdleConnections()
	}
}

// dialed is a network connection of a conn, under its TLS: closing it
// takes it off the conn's list. When the HTTP/2 transport closes it after
// the node closed it (its agent stopped, the node went away), its node is
// checked at once: the API shows a node that went away within a check,
// not at its next turn.
type dialed struct {
	net.Conn
	c *conn
	// reading is set while a read waits on the network: a connection
	// closed then was closed from this side (a ping unanswered, idle),
	// not by the node.
	reading atomic.Bool
}

func (d *dialed) Read(p []byte) (int, error) {
	d.reading.Store(true)
	defer d.reading.Store(false)
	return d.Conn.Read(p)
}

func (d *dialed) Close() error {
	d.c.mu.Lock()
	_, open := d.c.open[d] // not when conn.close closes it, on purpose
	delete(d.c.open, d)
	d.c.mu.Unlock()
	if open && !d.reading.Load() && d.c.broken != nil {
		d.c.broken()
	}
	return d.Conn.Close()
}

// dialNode dials the node whose connections the transport keeps under
// key (a conn's key), and opens TLS on it with that node's pinned
// configuration, speaking HTTP/2.
func (l *Link) dialNode(ctx context.Context, network, key string) (net.Conn, error) {
	l.mu.Lock()
	c, ok := l.byKey[key]
	l.mu.Unlock()
	if !ok {
		return nil, errors.New("nodelink: the node's connection was replaced (a new address or certificate); call again")
	}
	raw, err := (&net.Dialer{Timeout: c.connectTimeout, KeepAlive: 30 * time.Second}).DialContext(ctx, network, c.addr)
	if err != nil {
		return nil, err
	}
	d := &dialed{Conn: raw, c: c}
	cfg := c.tls()
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(d, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.connectTimeout)
	defer cancel()
	err = tc.HandshakeContext(hctx)
	// A server that offers other protocols refuses the handshake (its
	// alert carries no type to match); one that names none completes it.
	if err != nil && strings.Contains(err.Error(), "no application protocol") ||
		err == nil && tc.ConnectionState().NegotiatedProtocol != "h2" {
		err = fmt.Errorf("the agent at %s does not speak HTTP/2, which the control plane needs; upgrade it to this control plane's version", c.addr)
	}
	if err != nil {
		raw.Close()
		return nil, err
	}
	c.mu.Lock()
	if c.open == nil {
		c.open = map[*dialed]struct{}{}
	}
	c.open[d] = struct{}{}
	c.mu.Unlock()
	return tc, nil
}

// request sets r, a request of c's node, to go to it through the link's
// transport.
func (c *conn) request(r *http.Request) {
	u := *r.URL
	u.Host, r.URL, r.Host = c.key, &u, c.addr
}

// linkHeaderTable is the HPACK table size of a node link connection; the
// least http.HTTP2Config takes (0 is its default, 4 KiB).
const linkHeaderTable = 1

type connKey struct{}

// withConn makes the calls of Link.agents under ctx go to c's node.
func withConn(ctx context.Context, c *conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// route sends each request of Link.agents to the node its context names,
// over that node's transport.
type route struct{}

func (route) RoundTrip(req *http.Request) (*http.Response, error) {
	c, ok := req.Context().Value(connKey{}).(*conn)
	if !ok {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errors.New("nodelink: an agent call without a node")
	}
	r := *req
	c.request(&r)
	return c.tr.RoundTrip(&r)
}

// ErrNotEnrolled: the node's agent has no certificate yet, so the link
// does not dial it. The node is unavailable until it enrolls.
var ErrNotEnrolled = errclass.New(errclass.Unavailable, "not enrolled")

// notEnrolledReason is the state reason of a node whose agent has not
// enrolled: what it is, and what to do.
const notEnrolledReason = "not enrolled: start its agent with --server URL --join-token TOKEN (make one with quarry token create --join)"

// Client returns the agent client for a node and the context its calls must
// be made under, or an error a person can act on when the node is unknown
// or its agent has not enrolled.
func (l *Link) Client(ctx context.Context, nodeID string) (context.Context, agentv1connect.AgentServiceClient, error) {
	n, err := l.cfg.Store.GetNode(ctx, nodeID)
	if err != nil {
		return ctx, nil, err
	}
	c, err := l.conn(n)
	if err != nil {
		return ctx, nil, err
	}
	return withConn(ctx, c), l.agents, nil
}

// conn returns the connection to node n, replacing it when the node moved
// to another address.
func (l *Link) conn(n store.Node) (*conn, error) {
	if n.Certificate.Serial == "" {
		// A revoked certificate: what was opened with it goes too.
		l.mu.Lock()
		if c, ok := l.conns[n.ID]; ok {
			l.dropLocked(n.ID, c)
		}
		l.mu.Unlock()
		return nil, fmt.Errorf("node %s is %w: %s", n.Name, ErrNotEnrolled, strings.TrimPrefix(notEnrolledReason, "not enrolled: "))
	}
	if l.cfg.Issuer == nil {
		return nil, errors.New("the control plane has no CA to dial agents with")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.conns[n.ID]
	if ok && c.addr == n.Address && c.pin.Serial == n.Certificate.Serial && c.pin.KeyHash == n.Certificate.KeyHash {
		// A connection outlives the certificates it was opened with; once
		// the node's certificate expired, only a new handshake may tell
		// whether it holds a valid one.
		if l.cfg.Now().After(n.Certificate.NotAfter) && !c.expired {
			c.expired = true
			c.close()
		}
		return c, nil
	}
	if ok {
		l.dropLocked(n.ID, c)
	}
	issuer, id, pin := l.cfg.Issuer, n.ID, n.Certificate
	c = &conn{
		addr: n.Address, pin: pin, tr: l.tr, connectTimeout: l.cfg.ConnectTimeout,
		key:    poolKey(n.ID, n.Address, pin),
		tls:    func() *tls.Config { return pinned(issuer.ClientTLS(id), pin) },
		broken: func() { l.Kick(id) },
	}
	l.conns[n.ID] = c
	l.byKey[c.key] = c
	return c, nil
}

// dropLocked forgets node id's connection c and closes it. Called with
// l.mu held.
func (l *Link) dropLocked(id string, c *conn) {
	delete(l.conns, id)
	delete(l.byKey, c.key)
	c.close()
}

// poolKey names the connections to node id at addr that accept pin: a
// host name of the reserved .invalid domain, never resolved (dialNode
// dials addr).
func poolKey(id, addr string, pin store.NodeCertificate) string {
	h := sha256.Sum256([]byte(id + "\x00" + addr + "\x00" + pin.Serial + "\x00" + pin.KeyHash))
	return hex.EncodeToString(h[:10]) + ".node.invalid:443"
}

func (l *Link) state(nodeID string) *nodeState {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.nodes[nodeID]
	if !ok {
		s = &nodeState{}
		l.nodes[nodeID] = s
	}
	return s
}

// Connect checks a node right away, bounded by the connect timeout, and
// returns its fresh record and pool mounts. Operations call it when they need
// a node that is not READY instead of failing or waiting for the next check.
func (l *Link) Connect(ctx context.Context, nodeID string) (store.Node, []store.PoolMount, error) {
	return l.connect(ctx, nodeID, nil)
}

// connect is Connect asking about pools (nil: every pool in the store).
func (l *Link) connect(ctx context.Context, nodeID string, pools []store.Pool) (store.Node, []store.PoolMount, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.ConnectTimeout)
	defer cancel()
	n, err := l.cfg.Store.GetNode(ctx, nodeID)
	if err != nil {
		return store.Node{}, nil, err
	}
	n, mounts, err := l.check(ctx, n, "connect", pools)
	if err != nil {
		return n, nil, err
	}
	return n, mounts, nil
}

// Kick asks the health loop to check the given nodes now, or every node
// when none is given (a new shared pool, which every node must report on).
// Kicking one node does not make the loop check all of them: with
// thousands of nodes, a full round per enrollment made enrolling them all
// cost nodes² checks.
func (l *Link) Kick(nodeIDs ...string) {
	l.mu.Lock()
	if len(nodeIDs) == 0 {
		l.kickAll = true
	}
	for _, id := range nodeIDs {
		l.kicked[id] = true
	}
	l.mu.Unlock()
	l.wake()
}

// wake wakes the health loop to take the kicks recorded.
func (l *Link) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// KickPool asks the health loop to check now the nodes that may work on
// the pool (placement.MayUse): its assigned nodes, or every node when it
// is shared or has none assigned.
func (l *Link) KickPool(pool store.Pool) {
	l.mu.Lock()
	l.poolKicked = true
	l.mu.Unlock()
	if pool.Shared || len(pool.AssignedNodeIDs) == 0 {
		l.Kick()
		return
	}
	l.Kick(pool.AssignedNodeIDs...)
}

// takeKicks makes the kicked nodes due now, meeting those the loop has not
// met yet, and forgets the kicks; all says every node was kicked, pools
// that a pool was.
func (l *Link) takeKicks() (all, pools bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if all = l.kickAll; all {
		for _, s := range l.nodes {
			s.next = time.Time{}
			if s.inflight {
				s.kickedInFlight = true
			}
		}
		l.kickAll = false
	}
	_, pools = l.takeNodeKicksLocked()
	return all, pools
}

// takeNodeKicks is takeKicks when the nodes kicked were named, and returns
// them; ok is false, and nothing is taken, when every node was kicked.
func (l *Link) takeNodeKicks() (ids []string, pools, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kickAll {
		return nil, false, false
	}
	ids, pools = l.takeNodeKicksLocked()
	return ids, pools, true
}

// takeNodeKicksLocked makes the nodes kicked by name due now and forgets
// their kicks and the pools'. Called with l.mu held.
func (l *Link) takeNodeKicksLocked() (ids []string, pools bool) {
	for id := range l.kicked {
		s, ok := l.nodes[id]
		if !ok {
			s = &nodeState{}
			l.nodes[id] = s
		}
		if s.inflight {
			s.kickedInFlight = true
			continue
		}
		s.next = time.Time{}
		ids = append(ids, id)
	}
	clear(l.kicked)
	pools, l.poolKicked = l.poolKicked, false
	return ids, pools
}

// Forget drops what the link remembers of a deleted node.
func (l *Link) Forget(nodeID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.nodes, nodeID)
	if c, ok := l.conns[nodeID]; ok {
		l.dropLocked(nodeID, c)
	}
}

// agentError turns the error of a call to an agent into a classed error:
// what the agent's handler answered, with its class and message; or, when
// no handler answered (network, TLS, a timeout, a proxy), an
// errclass.Unavailable error whose message is the reason, with err as its
// cause.
func agentError(err error) error {
	if err == nil {
		return nil
	}
	if answered, ok := errclass.FromConnect(err); ok {
		return answered
	}
	return errclass.Wrap(errclass.Unavailable, err, "%s", reason(err))
}

// reason turns a dial or RPC error into the short text stored as the node's
// state reason.
func reason(err error) string {
	if ce, ok := errors.AsType[*checkError](err); ok {
		return ce.reason
	}
	if errors.Is(err, ErrNotEnrolled) {
		return notEnrolledReason
	}
	if r := tlsReason(err); r != "" {
		return r
	}
	for _, lost := range []syscall.Errno{syscall.EPIPE, syscall.ECONNRESET} {
		// The call went out on a connection the agent had closed, or
		// closed meanwhile: the raw text ("canceled: Post …: write: broken
		// pipe") reads as if someone had cancelled the call.
		if errors.Is(err, lost) {
			return "the agent closed the connection (it stopped or restarted, or the network dropped it; see that the agent runs and is reachable): " + lost.Error()
		}
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		if ce.Code() == connect.CodeDeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			return "no answer within the timeout"
		}
		return fmt.Sprintf("%s: %s", ce.Code(), ce.Message())
	}
	return err.Error()
}
