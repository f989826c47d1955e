package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/convert"
	"github.com/quarry-project/quarry/internal/discovery"
	"github.com/quarry-project/quarry/internal/download"
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/refresh"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/verify"
)

// defaultLeaseTTL is how long the leader lease lasts unrenewed: a leader
// that dies is replaced within it plus one follower poll (TTL/6).
const defaultLeaseTTL = 6 * time.Second

// term is the background work of one leadership: started when this
// replica takes the lease, stopped (and waited for) when it loses it. Every
// write its controllers make carries the term's epoch (store.Fence).
type term struct {
	epoch   int64
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	scans   *discovery.Controller
	dls     *download.Controller
	checks  *verify.Controller
	refresh *refresh.Controller
	convs   *convert.Controller
	link    *nodelink.Link
	// stopEvents ends the term's handling of the agents' file events.
	stopEvents func()
}

// newTerm builds the controllers of one term.
func (s *Server) newTerm(ctx context.Context, epoch int64) *term {
	cfg := s.cfg
	t := &term{epoch: epoch}
	t.ctx, t.cancel = context.WithCancel(store.WithFence(ctx, store.Fence{Epoch: epoch, Lost: s.fenced}))
	t.scans = discovery.New(discovery.Config{
		Store: s.store, Chooser: s.chooser, Lister: isoLister{s.link},
		StartDelay: cfg.ScanDelay, Interval: cfg.ScanInterval, Settle: cfg.ScanSettle,
		Metrics: s.metrics, Logger: cfg.Logger,
	})
	t.link = s.link
	t.dls = download.New(download.Config{
		Store: s.store, Chooser: s.chooser, Agents: agentDownloads{s.link}, Policy: s.agentPolicy,
		PerNode: cfg.MaxDownloadsPerNode, Global: cfg.MaxDownloads,
		MaxAttempts: cfg.DownloadMaxAttempts, RetryWindow: cfg.DownloadRetryWindow, RetryBase: cfg.DownloadRetryBase,
		Metrics: s.metrics, Logger: cfg.Logger,
		Grants: s.issuer.SignGrant, Lookup: agentDownloads{s.link}.LookupChecksum,
	})
	t.checks = verify.New(verify.Config{Store: s.store, Chooser: s.chooser, Hasher: fileHasher{s.link}, Logger: cfg.Logger})
	t.convs = convert.New(convert.Config{Store: s.store, Chooser: s.chooser, Converter: fileConverter{s.link}, Logger: cfg.Logger})
	t.refresh = refresh.New(refresh.Config{
		Store: s.store, Catalog: s.catalog, Interval: cfg.CatalogRefresh, Keep: cfg.CatalogKeep,
		Client: catalogClient(s.policy), Enqueue: t.dls.Enqueue, Files: fileDeleter{s.chooser, s.link},
		Hub: s.changes, Logger: cfg.Logger,
	})
	return t
}

// start runs the term's loops: node health, agents' file events, ISO
// scans, downloads, verifications, conversions, catalog refresh, upload
// follow-up.
func (t *term) start(s *Server) {
	t.wg.Go(func() { s.link.Run(t.ctx) })
	t.stopEvents = s.link.HandleEvents(poolEvents(t.scans))
	t.wg.Go(func() { t.scans.Run(t.ctx) })
	t.wg.Go(func() { t.dls.Run(t.ctx) })
	t.wg.Go(func() { t.checks.Run(t.ctx) })
	t.wg.Go(func() { t.convs.Run(t.ctx) })
	t.wg.Go(func() { t.refresh.Run(t.ctx) })
	t.wg.Go(func() { s.uploads.Run(t.ctx) })
	t.wg.Go(func() { t.sweeps(s) })
}

// sweepEvery is how often the leader looks at every unfinished job: a
// notification from a follower may be lost (the listening connection
// broke), and this bounds what that delays.
const sweepEvery = 30 * time.Second

// sweeps queues every unfinished job every sweepEvery, and when the bus
// asks for it (it reconnected), until the term ends.
func (t *term) sweeps(s *Server) {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		case <-s.resweep:
		}
		jobs, err := s.store.ListJobs(t.ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}})
		if err != nil {
			continue
		}
		for _, j := range jobs {
			switch j.Kind {
			case "", download.KindDownload, download.KindCopy:
				t.dls.Enqueue(j.ID)
			case verify.Kind:
				t.checks.Enqueue(j.ID)
			case convert.Kind:
				t.convs.Enqueue(j.ID)
			}
		}
	}
}

// stop ends the term and returns once every goroutine it started has.
func (t *term) stop() {
	t.cancel()
	t.stopEvents()
	t.wg.Wait()
}

// leading returns the current term, nil on a follower.
func (s *Server) leading() *term { return s.term.Load() }

// fenced is called when a controller's write was refused for an old epoch:
// another replica leads; this one steps down at once.
func (s *Server) fenced() {
	select {
	case s.lost <- struct{}{}:
	default:
	}
}

// replicaID names this process in the lease: host, pid and a random part.
func replicaID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// elect is the leader election loop: it renews the lease every TTL/3 while
// leading and asks for it every TTL/6 while following; it starts a term
// when it gets the lease, and stops it at once when a renewal fails or a
// write is fenced. On SQLite the data directory's lock already makes this
// process the only one, so it takes the lease whoever held it.
func (s *Server) elect(ctx context.Context) {
	for {
		if s.cfg.DatabaseURL == "" && s.leading() != nil {
			// SQLite: the lock on the data directory makes this process
			// the only one, so the lease needs no renewing (fencing goes
			// by its epoch, which nobody else can raise).
			select {
			case <-ctx.Done():
				s.stepDown(shuttingDown)
				return
			case <-s.lost:
				s.stepDown("a write was refused: another replica took the lease")
			}
			continue
		}
		wait := s.leaseTTL / 6
		if s.leading() != nil {
			wait = s.leaseTTL / 3
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			s.stepDown(shuttingDown)
			return
		case <-s.lost:
			t.Stop()
			s.stepDown("a write was refused: another replica took the lease")
		case <-t.C:
		}
		s.campaign(ctx)
	}
}

// campaign asks for the lease once and starts or stops the term.
func (s *Server) campaign(ctx context.Context) {
	cur := s.leading()
	req := store.LeaseRequest{Holder: s.replica, TTL: s.leaseTTL, Steal: s.cfg.DatabaseURL == "" && cur == nil}
	if cur != nil {
		req.Epoch = cur.epoch
	}
	cctx, cancel := context.WithTimeout(ctx, s.leaseTTL/3)
	l, err := s.store.TryLease(cctx, req)
	cancel()
	if ctx.Err() != nil {
		return
	}
	s.leaseSeen.Store(&l)
	switch {
	case err != nil && cur != nil:
		s.stepDown("renewing the lease failed: " + err.Error())
	case err != nil:
		s.log.Debug("asking for the leader lease failed", "err", err)
	case !l.Held && cur != nil:
		s.stepDown("the lease was taken by " + l.Holder)
	case l.Held && cur == nil:
		t := s.newTerm(context.WithoutCancel(ctx), l.Epoch)
		s.term.Store(t)
		t.start(s)
		s.log.Info("leading the control plane replicas: background work runs here", "epoch", l.Epoch, "replica", s.replica)
	}
}

// shuttingDown is the reason of the one step down that is not a lost
// lease.
const shuttingDown = "shutting down"

// stepDown stops the term, if any, and releases the lease when it still
// holds it, so that another replica takes over without waiting.
func (s *Server) stepDown(why string) {
	t := s.leading()
	if t == nil {
		return
	}
	s.term.Store(nil)
	t.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.store.ReleaseLease(ctx, s.replica, t.epoch); err != nil {
		s.log.Warn("releasing the leader lease", "err", err)
	}
	level := slog.LevelWarn // the lease was lost: someone must look
	if why == shuttingDown {
		level = slog.LevelInfo
	}
	s.log.Log(ctx, level, "no longer leading; background work stopped here", "epoch", t.epoch, "reason", why)
}

// toLeader hands a job to the leader's controller of its kind ("download",
// "verify", "convert"), or tells it a node changed state ("node" and the
// node's id) or has file events to collect ("events"):
// this replica's when it leads, the leader's through the
// database otherwise. A job the leader misses while leadership changes is
// re-adopted by the next term, which starts with every unfinished job.
func (s *Server) toLeader(kind, id string) {
	if t := s.leading(); t != nil {
		t.enqueue(kind, id)
		return
	}
	if s.bus != nil {
		s.bus.send(message{From: s.replica, Kind: kind, ID: id})
	}
}

func (t *term) enqueue(kind, id string) {
	switch kind {
	case "download":
		t.dls.Enqueue(id)
	case "verify":
		t.checks.Enqueue(id)
	case "convert":
		t.convs.Enqueue(id)
	case "node":
		t.dls.NodeChanged()
	case "events":
		t.link.Kick(id)
	}
}

// onMessage is work another replica handed this one.
func (s *Server) onMessage(m message) {
	t := s.leading()
	if t == nil {
		return
	}
	switch m.Kind {
	case "request":
		go s.answer(t, m.ID)
	default:
		t.enqueue(m.Kind, m.ID)
	}
}

// scanRequest is a follower's ScanISOs, for the leader.
type scanRequest struct {
	Pools []string `json:"pools"`
}

// scanAnswer is the leader's answer to a scan request.
type scanAnswer struct {
	Results []discovery.Result `json:"results"`
	Error   string             `json:"error,omitempty"`
}

// statusAnswer is the leader's answer to a scan status request.
type statusAnswer struct {
	Running []discovery.Running `json:"running"`
	Last    []discovery.Result  `json:"last"`
}

// refreshRequest is a follower's RefreshCatalog, for the leader.
type refreshRequest struct {
	CatalogID string `json:"catalog_id"`
}

// refreshAnswer is the leader's answer to a refresh request: the entries'
// status before the checks, or the error and its class.
type refreshAnswer struct {
	Before []refresh.Status   `json:"before"`
	Class  agentv1.ErrorClass `json:"class,omitempty"`
	Error  string             `json:"error,omitempty"`
}

// Kinds of leader requests.
const (
	requestScan       = "scan"
	requestScanStatus = "scan-status"
	requestRefresh    = "catalog-refresh"
)

// catalogRefresher is the catalog refresh the API uses: the status from the
// store on any replica, the checks asked of the leader's controller.
type catalogRefresher struct{ s *Server }

func (r catalogRefresher) Status(ctx context.Context, catalogID string) ([]refresh.Status, error) {
	return refresh.ReadStatus(ctx, r.s.store, r.s.cfg.CatalogRefresh, catalogID)
}

func (r catalogRefresher) Interval() time.Duration { return r.s.cfg.CatalogRefresh }

func (r catalogRefresher) Keep() int { return cmp.Or(r.s.cfg.CatalogKeep, refresh.DefaultKeep) }

func (r catalogRefresher) Trigger(ctx context.Context, catalogID string) ([]refresh.Status, error) {
	if t := r.s.leading(); t != nil {
		return t.refresh.Trigger(ctx, catalogID)
	}
	var ans refreshAnswer
	if err := r.s.ask(ctx, requestRefresh, refreshRequest{CatalogID: catalogID}, &ans); err != nil {
		return nil, err
	}
	if ans.Error != "" {
		return nil, errclass.FromWire(ans.Class, ans.Error)
	}
	return ans.Before, nil
}

// scanner is the ISO scanner the API uses: the leader's discovery
// controller, here or through the database.
type scanner struct{ s *Server }

func (sc scanner) Scan(ctx context.Context, poolIDs ...string) ([]discovery.Result, error) {
	if t := sc.s.leading(); t != nil {
		return t.scans.Scan(ctx, poolIDs...)
	}
	var ans scanAnswer
	if err := sc.s.ask(ctx, requestScan, scanRequest{Pools: poolIDs}, &ans); err != nil {
		return nil, err
	}
	if ans.Error != "" {
		return nil, errclass.New(errclass.Unavailable, "%s", ans.Error)
	}
	return ans.Results, nil
}

// Status is the leader's scans, asked of it on a follower; when no leader
// answers within 2 s a follower knows of none.
func (sc scanner) Status() ([]discovery.Running, []discovery.Result) {
	if t := sc.s.leading(); t != nil {
		return t.scans.Status()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var ans statusAnswer
	if err := sc.s.ask(ctx, requestScanStatus, struct{}{}, &ans); err != nil {
		sc.s.log.Debug("asking the leader for its scans", "err", err)
		return nil, nil
	}
	return ans.Running, ans.Last
}

// ask hands a request to the leader through the database and waits for
// its answer, which it decodes into answer; it asks again when the leader
// may have changed meanwhile.
func (s *Server) ask(ctx context.Context, kind string, request, answer any) error {
	if s.bus == nil {
		return errclass.New(errclass.Unavailable, "this control plane is starting; try again in a few seconds")
	}
	body, err := json.Marshal(request)
	if err != nil {
		return err
	}
	r := store.LeaderRequest{ID: newRequestID(), Kind: kind, Request: string(body), Created: time.Now()}
	if err := s.store.CreateLeaderRequest(ctx, r); err != nil {
		return err
	}
	defer s.store.DeleteLeaderRequest(context.WithoutCancel(ctx), r.ID)
	for {
		answered, done := s.bus.waiter(r.ID)
		s.bus.send(message{From: s.replica, Kind: "request", ID: r.ID})
		t := time.NewTimer(5 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			done()
			return ctx.Err()
		case <-answered:
		case <-t.C: // no leader heard it (one was being elected): again
		}
		t.Stop()
		done()
		got, err := s.store.GetLeaderRequest(ctx, r.ID)
		if err != nil {
			return err
		}
		if !got.Answered {
			continue
		}
		if err := json.Unmarshal([]byte(got.Response), answer); err != nil {
			return fmt.Errorf("the leader's answer to a %s request: %w", kind, err)
		}
		return nil
	}
}

// answer runs a follower's request in term t and stores the answer.
func (s *Server) answer(t *term, id string) {
	s.answering.Lock()
	if s.inFlight[id] {
		s.answering.Unlock()
		return
	}
	s.inFlight[id] = true
	s.answering.Unlock()
	defer func() {
		s.answering.Lock()
		delete(s.inFlight, id)
		s.answering.Unlock()
	}()
	r, err := s.store.GetLeaderRequest(t.ctx, id)
	if err != nil || r.Answered {
		return
	}
	var ans any
	switch r.Kind {
	case requestScan:
		var req scanRequest
		var a scanAnswer
		if err := json.Unmarshal([]byte(r.Request), &req); err != nil {
			a.Error = "a scan request the leader cannot read: " + err.Error()
		} else if a.Results, err = t.scans.Scan(t.ctx, req.Pools...); err != nil {
			a.Error = err.Error()
		}
		ans = a
	case requestScanStatus:
		var a statusAnswer
		a.Running, a.Last = t.scans.Status()
		ans = a
	case requestRefresh:
		var req refreshRequest
		var a refreshAnswer
		err := json.Unmarshal([]byte(r.Request), &req)
		if err == nil {
			a.Before, err = t.refresh.Trigger(t.ctx, req.CatalogID)
		}
		if err != nil {
			a.Class, a.Error = errclass.Wire(err), err.Error()
		}
		ans = a
	default:
		s.log.Warn("a follower's request of an unknown kind; is it running another version?", "request", id, "kind", r.Kind)
		return
	}
	if t.ctx.Err() != nil {
		return // stepped down: the next leader answers
	}
	body, _ := json.Marshal(ans)
	if err := s.store.AnswerLeaderRequest(context.WithoutCancel(t.ctx), id, string(body)); err != nil && !errors.Is(err, store.ErrConflict) {
		s.log.Warn("answering a follower's request", "request", id, "kind", r.Kind, "err", err)
		return
	}
	s.bus.send(message{From: s.replica, Kind: "answered", ID: id})
}

func newRequestID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "req-" + hex.EncodeToString(b)
}

// leaderState is what /readyz and the metrics say of the lease.
func (s *Server) leaderState() (leading bool, epoch int64, holder string) {
	if t := s.leading(); t != nil {
		return true, t.epoch, s.replica
	}
	if l := s.leaseSeen.Load(); l != nil {
		return false, l.Epoch, l.Holder
	}
	return false, 0, ""
}
