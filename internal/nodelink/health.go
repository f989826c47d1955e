package nodelink

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
)

// Run checks every node on the interval until ctx is done. A node that fails
// is retried with capped exponential backoff; a kick checks the nodes it
// names (or every node) now. It returns once its checks have ended.
func (l *Link) Run(ctx context.Context) {
	var checks sync.WaitGroup
	defer checks.Wait()
	var st starter
	tick := time.NewTimer(0)
	defer tick.Stop()
	// A round reads the nodes it checks; with thousands of nodes due at
	// spread times, a round per node due cost more than the checks. Rounds
	// are at least a tenth of an interval apart (at most 500 ms): each
	// starts the kicked nodes' checks now, and those due before the next
	// round each when it is due (both paced by the starter).
	gap := min(l.cfg.Interval/10, 500*time.Millisecond)
	var last, lastFull time.Time
	// pools is the last listing of the pools, which the rounds until the
	// next full one share unless a pool is kicked: listed every round, the
	// pools were a tenth of the loop's reading and garbage. A pool changed
	// through another replica is met at the next full round.
	var pools []store.Pool
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-l.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(last.Add(gap))):
		}
		all, poolKicked := l.takeKicks()
		last = time.Now()
		// A full round, which lists every node's id and the pools, once an
		// interval (and on a kick of every node): it meets the nodes no
		// kick announced.
		full := all || last.Sub(lastFull) >= l.cfg.Interval
		if full {
			lastFull = last
		}
		if full || poolKicked {
			pools = nil
		}
		pools = l.round(ctx, gap, full, pools, &st, &checks)
		l.ensureAllInitialized(ctx, pools)
		tick.Reset(l.untilNextDue())
	}
}

// starter bounds how the health loop starts checks: how many are in
// flight, and how fast they start.
type starter struct {
	slots chan struct{}
	// pace starts checks at most twice as fast as an interval's checks
	// need: nodes due together, or left late while a round read the
	// store (listing every node's record took 300 ms at 5,000 nodes), start
	// spread out instead of hundreds at once, which kept both cores busy
	// and held API requests up by 100 ms.
	pace *rate.Limiter
}

// resize fits the starter to a cluster of nodes nodes, as of now.
func (s *starter) resize(now time.Time, nodes, least int, interval time.Duration) {
	if want := checkSlots(nodes, least); cap(s.slots) != want {
		s.slots = make(chan struct{}, want)
	}
	r := rate.Limit(2 * float64(max(nodes, 1)) / interval.Seconds())
	if s.pace == nil {
		// A burst of a few checks: a handful of nodes, or a kick of a
		// few, start at once.
		s.pace = rate.NewLimiter(r, least)
	}
	s.pace.SetLimitAt(now, r)
}

// turn reserves the start of a check due at due and returns how long
// from now it waits for it; cancel the turn when the check does not start.
func (s *starter) turn(now, due time.Time) (time.Duration, *rate.Reservation) {
	at := now
	if due.After(now) {
		at = due
	}
	r := s.pace.ReserveN(at, 1)
	return at.Sub(now) + r.DelayFrom(at), r
}

// round starts a check of every node due within a gap from now, each at the
// time it is due (paced by the starter), at most len(slots) at a time, and
// returns once all have started (or a kick came while it waited for one:
// the nodes not started yet go to the next round). It does not wait for the
// checks to end: a round that did made every node wait for the slowest check
// of the round before its own, which at thousands of nodes left most of them
// unchecked for many intervals. It asks the agents about pools, or lists
// them when pools is nil, and returns the pools it used (nil when listing
// failed).
func (l *Link) round(ctx context.Context, gap time.Duration, full bool, pools []store.Pool, st *starter, checks *sync.WaitGroup) []store.Pool {
	due, err := l.dueNodes(ctx, full, l.cfg.Now().Add(gap))
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("listing nodes for health checks failed", "err", err)
		}
		return nil
	}
	// unclaimFrom gives back the nodes from the i-th on, not started.
	unclaimFrom := func(i int) {
		for _, d := range due[i:] {
			l.unclaim(d.n.ID, d.st)
		}
	}
	// One listing of the pools serves the whole round, and the next ones:
	// read per check, it cost nodes × pools rows every interval.
	if pools == nil {
		if pools, err = l.cfg.Store.ListPools(ctx); err != nil {
			unclaimFrom(0)
			if ctx.Err() == nil {
				l.log.Warn("listing pools for health checks failed", "err", err)
			}
			return nil
		}
	}
	// Checks in flight grow with the cluster: a fixed number of them can
	// check only so many nodes per interval however fast each check is.
	// Checks started by earlier rounds keep their own slots.
	l.mu.Lock()
	known := len(l.nodes)
	l.mu.Unlock()
	st.resize(l.cfg.Now(), known, l.cfg.Concurrency, l.cfg.Interval)
	slots := st.slots
	// start starts the check of d, once a slot is free; false when ctx
	// ended first.
	start := func(d dueCheck, why string) bool {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		pools := pools
		checks.Go(func() {
			defer func() {
				l.unclaim(d.n.ID, d.st)
				<-slots
			}()
			cctx, cancel := context.WithTimeout(ctx, l.cfg.CheckTimeout)
			defer cancel()
			l.check(cctx, d.n, why, pools)
		})
		return true
	}
	slices.SortFunc(due, func(a, b dueCheck) int { return a.due.Compare(b.due) })
	wait := time.NewTimer(0)
	defer wait.Stop()
	for i, d := range due {
		until, turn := st.turn(l.cfg.Now(), d.due)
		if until > 0 {
			wait.Reset(until)
		waiting:
			for {
				select {
				case <-wait.C:
					break waiting
				case <-l.kick:
					// The nodes kicked are checked now and the round goes
					// on: a round that gave way to every kick started next
					// to none of its checks while kicks came faster than
					// its gaps (pools created one after another), and
					// thousands of nodes went unchecked for minutes.
					if l.startKicked(ctx, &pools, start) {
						continue
					}
					turn.CancelAt(l.cfg.Now())
					l.wake() // for the loop, after this round
					unclaimFrom(i)
					return pools
				case <-ctx.Done():
					unclaimFrom(i)
					return nil
				}
			}
		}
		if !start(d, "interval") {
			unclaimFrom(i)
			return nil
		}
	}
	return pools
}

// startKicked starts, with start, the checks of the nodes kicked while a
// round waits, but for those being checked, asking about pools listed anew
// when a pool was kicked. It reports whether it took the kicks: not when
// every node was kicked (a round of its own meets them all) or when it
// could not read the store (the kicks wait for the next round).
func (l *Link) startKicked(ctx context.Context, pools *[]store.Pool, start func(dueCheck, string) bool) bool {
	ids, poolKicked, ok := l.takeNodeKicks()
	if !ok {
		return false
	}
	giveBack := func(err error) bool {
		if ctx.Err() == nil {
			l.log.Warn("reading the nodes kicked failed", "err", err)
		}
		l.mu.Lock()
		l.poolKicked = l.poolKicked || poolKicked
		l.mu.Unlock()
		l.Kick(ids...)
		return false
	}
	if poolKicked {
		ps, err := l.cfg.Store.ListPools(ctx)
		if err != nil {
			return giveBack(err)
		}
		*pools = ps
	}
	claimed := map[string]dueCheck{}
	now := l.cfg.Now()
	for _, id := range ids {
		if st, at, ok := l.claim(id, now); ok {
			claimed[id] = dueCheck{st: st, due: at}
		}
	}
	due, err := l.readClaimed(ctx, claimed)
	if err != nil {
		return giveBack(err)
	}
	for i, d := range due {
		if !start(d, "kick") {
			for _, d := range due[i:] {
				l.unclaim(d.n.ID, d.st)
			}
			return false
		}
	}
	return true
}

// dueCheck is a node a round checks, claimed for it, and when it is due.
type dueCheck struct {
	n   store.Node
	st  *nodeState
	due time.Time
}

// maxDueRead is the most nodes a round reads by id; with more due, it
// lists them all (a variable for the tests).
var maxDueRead = 1000

// dueNodes claims the nodes due by horizon and returns them as stored. A
// full round meets every node by listing their ids; the others claim only
// among the nodes the link knows (from earlier rounds, and kicks). Either
// reads the records of the nodes due by id, up to maxDueRead of them, and
// lists every node's record when more are due: at thousands of nodes,
// listing every record twice a second to find the tenth due was most of
// the loop's reading, and once an interval it still held the loop up for
// 300 ms on a busy control plane.
func (l *Link) dueNodes(ctx context.Context, full bool, horizon time.Time) (due []dueCheck, err error) {
	var claimed map[string]dueCheck
	if full {
		ids, err := l.cfg.Store.NodeIDs(ctx)
		if err != nil {
			return nil, err
		}
		claimed = map[string]dueCheck{}
		for _, id := range ids {
			if st, at, ok := l.claim(id, horizon); ok {
				claimed[id] = dueCheck{st: st, due: at}
			}
		}
	} else {
		claimed = l.claimKnown(horizon)
	}
	if len(claimed) <= maxDueRead {
		return l.readClaimed(ctx, claimed)
	}
	for id, d := range claimed {
		l.unclaim(id, d.st)
	}
	nodes, err := l.cfg.Store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if st, at, ok := l.claim(n.ID, horizon); ok {
			due = append(due, dueCheck{n, st, at})
		}
	}
	return due, nil
}

// readClaimed reads the claimed nodes' records; the link forgets the nodes
// the store no longer has.
func (l *Link) readClaimed(ctx context.Context, claimed map[string]dueCheck) (due []dueCheck, err error) {
	var nodes []store.Node
	if len(claimed) > 0 {
		nodes, err = l.cfg.Store.GetNodes(ctx, slices.Collect(maps.Keys(claimed))...)
	}
	if err != nil {
		for id, d := range claimed {
			l.unclaim(id, d.st)
		}
		return nil, err
	}
	for _, n := range nodes {
		d := claimed[n.ID]
		d.n = n
		due = append(due, d)
		delete(claimed, n.ID)
	}
	for id := range claimed {
		l.Forget(id) // deleted (through another replica)
	}
	return due, nil
}

// claimKnown claims, as claim does, every node the link knows that is due
// by horizon; the nodes' records are left to read.
func (l *Link) claimKnown(horizon time.Time) map[string]dueCheck {
	l.mu.Lock()
	defer l.mu.Unlock()
	claimed := map[string]dueCheck{}
	for id, st := range l.nodes {
		if !st.inflight && !st.next.After(horizon) {
			st.inflight = true
			claimed[id] = dueCheck{st: st, due: st.next}
		}
	}
	return claimed
}

// maxCheckSlots bounds the checks in flight however large the cluster.
const maxCheckSlots = 1024

// checkSlots is how many checks of nodes nodes may be in flight: least at
// least, one per 5 nodes, at most maxCheckSlots. A check mostly waits (on
// the node, on the database's group commit); with one per 50 nodes, 5,000
// nodes on a busy SQLite control plane fell behind by two intervals, and
// with one per 10 on PostgreSQL on a saturated machine, whose group
// commits took a second, the oldest check grew to 12–15 s (6 s with one
// per 5).
func checkSlots(nodes, least int) int {
	return max(least, min(nodes/5, maxCheckSlots))
}

// claim marks the node as being checked by the loop and returns its state
// and when it is due, when that is by horizon and it is not being checked
// already.
func (l *Link) claim(nodeID string, horizon time.Time) (*nodeState, time.Time, bool) {
	st := l.state(nodeID)
	l.mu.Lock()
	defer l.mu.Unlock()
	if st.inflight || st.next.After(horizon) {
		return nil, time.Time{}, false
	}
	st.inflight = true
	return st, st.next, true
}

// unclaim ends the loop's claim on node id. A kick that came while a check
// of a healthy node was in flight is taken now: that check may have asked
// before the change the kick is about (a pool assigned to the node), and
// it scheduled the node's next check an interval away. A node that failed
// keeps its backoff: the kick may be its own connection closing.
func (l *Link) unclaim(id string, st *nodeState) {
	l.mu.Lock()
	st.inflight = false
	again := st.kickedInFlight && st.failures == 0
	st.kickedInFlight = false
	l.mu.Unlock()
	if again {
		l.Kick(id)
	}
}

// untilNextDue is how long the loop may sleep before some node is due, at
// most an interval: new nodes come with a Kick. A node being checked is
// due again only once its check has scheduled the next.
func (l *Link) untilNextDue() time.Duration {
	wait := l.cfg.Interval
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.nodes {
		if d := s.next.Sub(now); d < wait && !s.inflight {
			wait = d
		}
	}
	return max(wait, 10*time.Millisecond)
}

// announceEvery is how often an agent's word that it started can make the
// link check its node: Announce needs no credential, so the checks it
// causes are bounded.
const announceEvery = time.Second

// Announced checks a node right away because its agent says it (re)started,
// instead of leaving it UNREACHABLE until the next scheduled check, which
// for a node that failed several times can be MaxBackoff away. The agent's
// word is only a hint: the check is the link's own call to the node. A node
// is checked this way at most once per announceEvery; it returns once the
// check is stored.
func (l *Link) Announced(ctx context.Context, nodeID string) error {
	n, err := l.cfg.Store.GetNode(ctx, nodeID)
	if err != nil {
		return err
	}
	st := l.state(n.ID)
	now := l.cfg.Now()
	l.mu.Lock()
	recent := !st.announced.IsZero() && now.Sub(st.announced) < announceEvery
	if !recent {
		st.announced = now
	}
	l.mu.Unlock()
	if recent {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, l.cfg.CheckTimeout)
	defer cancel()
	_, _, err = l.check(cctx, n, "announced", nil)
	return err
}

// FileEventsAnnounced collects a node's file events now because its agent
// says it has new ones: through a check, as Announced, when this link
// hands events to a handler (HandleEvents); otherwise the word goes to
// the replica that does (Config.HandEvents).
func (l *Link) FileEventsAnnounced(ctx context.Context, nodeID string) error {
	l.mu.Lock()
	handling := l.events.handler != nil
	l.mu.Unlock()
	if handling {
		return l.Announced(ctx, nodeID)
	}
	if l.cfg.HandEvents == nil {
		return nil
	}
	if _, err := l.cfg.Store.GetNode(ctx, nodeID); err != nil {
		return err
	}
	l.cfg.HandEvents(nodeID)
	return nil
}

// check asks one agent for its facts about pools (nil: every pool in the
// store), stores the outcome and schedules the next check. It returns the
// node as stored and, on success, its mounts.
func (l *Link) check(ctx context.Context, n store.Node, why string, pools []store.Pool) (store.Node, []store.PoolMount, error) {
	st := l.state(n.ID)
	st.checking.Lock()
	defer st.checking.Unlock()
	l.mu.Lock()
	stale := st.recorded.After(n.LastCheckedAt)
	l.mu.Unlock()
	if stale {
		// Another check stored a newer outcome while this one waited its
		// turn: the state this one moves from is that one's.
		fresh, err := l.cfg.Store.GetNode(ctx, n.ID)
		if err != nil {
			return n, nil, err
		}
		n = fresh
	}

	c, err := l.conn(n)
	if errors.Is(err, ErrNotEnrolled) {
		n, rerr := l.recordNotEnrolled(ctx, n, st)
		return n, nil, errors.Join(err, rerr)
	}
	if err != nil {
		return n, nil, err
	}
	if pools == nil {
		if pools, err = l.cfg.Store.ListPools(ctx); err != nil {
			return n, nil, err
		}
	}
	req := &agentv1.GetFactsRequest{}
	for _, p := range pools {
		// Not the pools the node may never work on: with every node asked
		// about every pool, checks, stored mounts and the link's memory grew
		// with nodes × pools.
		if placement.MayUse(p, n.ID) {
			req.Pools = append(req.Pools, poolRef(p))
		}
	}
	handler, gen, cursor := l.eventsOf(st)
	req.Events = cursor
	start := l.cfg.Now()
	resp, callErr := l.agents.GetFacts(withConn(ctx, c), connect.NewRequest(req))
	now := l.cfg.Now()
	if callErr != nil && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// The caller went away (a cancelled request, shutdown): that says
		// nothing about the node.
		return n, nil, callErr
	}
	l.metrics.observe(callErr == nil, now.Sub(start))

	prev := n
	next := store.NodeStatus{
		State:         n.State,
		StateReason:   n.StateReason,
		StateSince:    n.StateSince,
		LastCheckedAt: now,
		Hostname:      n.Hostname,
		AgentVersion:  n.AgentVersion,
	}
	var mounts []store.PoolMount
	if callErr != nil {
		// A node never reached stays UNKNOWN, with the error as its reason.
		if n.State == store.NodeReady || (n.State == store.NodeUnreachable) {
			next.State = store.NodeUnreachable
		} else {
			next.State = store.NodeUnknown
		}
		next.StateReason = reason(callErr)
	} else {
		next.State = store.NodeReady
		next.StateReason = ""
		next.Hostname = resp.Msg.GetHostname()
		next.AgentVersion = resp.Msg.GetVersion()
		mounts = make([]store.PoolMount, 0, len(resp.Msg.GetPools()))
		for _, pf := range resp.Msg.GetPools() {
			mounts = append(mounts, store.PoolMount{
				NodeID: n.ID, PoolID: pf.GetId(), Mounted: pf.GetMounted(), Reason: pf.GetReason(),
				FreeBytes: pf.GetFreeBytes(), TotalBytes: pf.GetTotalBytes(), CheckedAt: now,
			})
		}
	}
	if next.State != prev.State || next.StateSince.IsZero() {
		next.StateSince = now
	}
	var f *facts
	if callErr == nil {
		f = newFacts(resp.Msg)
	}
	retryIn := l.schedule(st, now, f)

	// Record with a fresh context: the outcome of a check that ran out of
	// time must still be stored.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.cfg.Store.RecordNodeCheck(wctx, n.ID, next, mounts); err != nil {
		l.log.Warn("storing a health check failed", "node", n.Name, "err", err)
		return n, nil, err
	}
	l.mu.Lock()
	st.recorded = next.LastCheckedAt.Truncate(time.Microsecond) // as the store keeps it
	l.mu.Unlock()
	n.State, n.StateReason, n.StateSince = next.State, next.StateReason, next.StateSince
	n.LastCheckedAt, n.Hostname, n.AgentVersion = next.LastCheckedAt, next.Hostname, next.AgentVersion
	l.metrics.setState(n)

	attrs := []any{"node", n.Name, "address", n.Address, "state", n.State, "check", why}
	if callErr != nil {
		attrs = append(attrs, "err", next.StateReason, "retry_in", retryIn.Round(time.Millisecond))
	}
	if next.State != prev.State {
		l.log.Info("node state changed", append(attrs, "from", prev.State)...)
		if l.cfg.OnStateChange != nil {
			l.cfg.OnStateChange(n)
		}
	} else {
		l.log.Debug("node checked", attrs...)
	}
	if callErr != nil {
		return n, nil, &checkError{reason: next.StateReason, err: callErr}
	}
	if handler != nil {
		// After the mounts are stored: a scan an event starts chooses its
		// node by them.
		l.deliver(n.ID, st, handler, gen, resp.Msg)
	}
	l.renewIfDue(ctx, n, c)
	return n, mounts, nil
}

// checkError is a failed check: its message is the node's state reason,
// written for people; the cause stays reachable with errors.Is/As.
type checkError struct {
	reason string
	err    error
}

func (e *checkError) Error() string { return e.reason }
func (e *checkError) Unwrap() error { return e.err }

// schedule records a check's outcome (facts is nil when it failed) and
// returns the time until the node's next check.
func (l *Link) schedule(st *nodeState, now time.Time, f *facts) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	st.facts = f
	if f == nil {
		st.failures++
	} else {
		st.failures = 0
	}
	d := l.delay(st.failures)
	st.next = now.Add(d)
	return d
}

// delay is the time to the next check: the interval when healthy, doubling
// per consecutive failure up to MaxBackoff, always jittered by ±10 %.
func (l *Link) delay(failures int) time.Duration {
	d := l.cfg.Interval
	for i := 1; i < failures && d < l.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, l.cfg.MaxBackoff)
	jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(d))
	return d + jitter
}
