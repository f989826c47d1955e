// Package nodelink owns every connection from the control plane to the
// agents: it dials nodes at their normalized management address, checks
// their health on an interval, connects lazily when an operation needs a
// node that is not READY, and initializes new pools through one node.
//
// Node state lives in the store; the link is the only writer of it.
package nodelink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

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
	// Concurrency bounds checks in flight (default 8).
	Concurrency int
	// TLS, when set, is used to dial agents over HTTPS; nil dials h2c.
	TLS *tls.Config
	// Registerer receives the link's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Link is the control plane's connection to every agent.
type Link struct {
	cfg     Config
	log     *slog.Logger
	http    *http.Client
	scheme  string
	metrics *metrics

	mu      sync.Mutex
	clients map[string]agentv1connect.AgentServiceClient // by address
	nodes   map[string]*nodeState                        // by node id
	kick    chan struct{}

	initMu sync.Mutex // one pool initialization at a time
}

// nodeState is the link's in-memory view of one node between checks.
type nodeState struct {
	checking sync.Mutex // one check of a node at a time

	// Guarded by Link.mu.
	failures int
	next     time.Time // when the next scheduled check is due
	facts    *agentv1.GetFactsResponse
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
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: cfg.ConnectTimeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	l := &Link{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "nodelink"),
		scheme:  "http",
		metrics: newMetrics(cfg.Registerer),
		clients: map[string]agentv1connect.AgentServiceClient{},
		nodes:   map[string]*nodeState{},
		kick:    make(chan struct{}, 1),
	}
	if cfg.TLS != nil {
		tr.TLSClientConfig = cfg.TLS
		tr.ForceAttemptHTTP2 = true
		l.scheme = "https"
	} else {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = p
	}
	l.http = &http.Client{Transport: tr}
	return l
}

// Client returns the agent client for a node, or an error a person can act
// on when the node is unknown.
func (l *Link) Client(ctx context.Context, nodeID string) (agentv1connect.AgentServiceClient, error) {
	n, err := l.cfg.Store.GetNode(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	return l.client(n.Address), nil
}

func (l *Link) client(addr string) agentv1connect.AgentServiceClient {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.clients[addr]
	if !ok {
		c = agentv1connect.NewAgentServiceClient(l.http, l.scheme+"://"+addr)
		l.clients[addr] = c
	}
	return c
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
	ctx, cancel := context.WithTimeout(ctx, l.cfg.ConnectTimeout)
	defer cancel()
	n, err := l.cfg.Store.GetNode(ctx, nodeID)
	if err != nil {
		return store.Node{}, nil, err
	}
	n, mounts, err := l.check(ctx, n, "connect")
	if err != nil {
		return n, nil, err
	}
	return n, mounts, nil
}

// Kick asks the health loop to check every node now, for example after a
// pool was created so that every node reports on it.
func (l *Link) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Forget drops what the link remembers of a deleted node.
func (l *Link) Forget(nodeID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.nodes, nodeID)
}

// reason turns a dial or RPC error into the short text stored as the node's
// state reason.
func reason(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		if ce.Code() == connect.CodeDeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			return "no answer within the timeout"
		}
		return fmt.Sprintf("%s: %s", ce.Code(), ce.Message())
	}
	return err.Error()
}
