package events

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// publishingStore is a store.Store that publishes its changes.
type publishingStore struct {
	store.Store
	hub *Hub

	mu sync.Mutex
	// checks is what the last health check of every node recorded, so that
	// a check that changed nothing a person sees publishes nothing.
	checks map[string]nodeCheck
}

// nodeCheck digests what a person sees of a check (checkSeed): kept for
// every node, the records themselves held tens of MiB at thousands of
// nodes.
type nodeCheck struct {
	status, mounts uint64
}

var checkSeed = maphash.MakeSeed()

// statusDigest digests the node's state, its reason and its agent.
func statusDigest(st store.NodeStatus) uint64 {
	var h maphash.Hash
	h.SetSeed(checkSeed)
	for _, s := range []string{string(st.State), st.StateReason, st.Hostname, st.AgentVersion} {
		h.WriteString(s)
		h.WriteByte(0)
	}
	return h.Sum64()
}

// mountsDigest digests whether the node mounts each pool, and why not.
func mountsDigest(mounts []store.PoolMount) uint64 {
	var h maphash.Hash
	h.SetSeed(checkSeed)
	for _, m := range mounts {
		h.WriteString(m.PoolID)
		h.WriteByte(0)
		if m.Mounted {
			h.WriteByte(1)
		}
		h.WriteString(m.Reason)
		h.WriteByte(0)
	}
	return h.Sum64()
}

// Store returns s publishing every change to hub. Reads pass through.
func Store(s store.Store, hub *Hub) store.Store {
	return &publishingStore{Store: s, hub: hub, checks: map[string]nodeCheck{}}
}

// publish sends evs when err is nil, and returns err.
func (p *publishingStore) publish(err error, evs ...Event) error {
	if err == nil {
		p.hub.Publish(evs...)
	}
	return err
}

func (p *publishingStore) CreateNode(ctx context.Context, n store.Node) error {
	return p.publish(p.Store.CreateNode(ctx, n), Event{Resource: Node, Change: Created, ID: n.ID})
}

func (p *publishingStore) UpdateNode(ctx context.Context, id, name, address string) error {
	return p.publish(p.Store.UpdateNode(ctx, id, name, address), Event{Resource: Node, ID: id})
}

func (p *publishingStore) DeleteNode(ctx context.Context, id string) error {
	err := p.Store.DeleteNode(ctx, id)
	if err == nil {
		p.mu.Lock()
		delete(p.checks, id)
		p.mu.Unlock()
	}
	return p.publish(err, Event{Resource: Node, Change: Deleted, ID: id}, Event{Resource: Pool})
}

// RecordNodeCheck publishes only when the node's state, its reason, its
// agent or whether it mounts each pool changed: free space moves with
// every check and is read when something else changes.
func (p *publishingStore) RecordNodeCheck(ctx context.Context, nodeID string, st store.NodeStatus, mounts []store.PoolMount) error {
	if err := p.Store.RecordNodeCheck(ctx, nodeID, st, mounts); err != nil {
		return err
	}
	p.mu.Lock()
	prev, seen := p.checks[nodeID]
	next := nodeCheck{status: statusDigest(st), mounts: prev.mounts}
	if mounts != nil {
		next.mounts = mountsDigest(mounts)
	}
	p.checks[nodeID] = next
	p.mu.Unlock()
	var evs []Event
	if !seen || prev.status != next.status {
		evs = append(evs, Event{Resource: Node, ID: nodeID})
	}
	if !seen || prev.mounts != next.mounts {
		evs = append(evs, Event{Resource: Pool})
	}
	p.hub.Publish(evs...)
	return nil
}

func (p *publishingStore) SetNodeCertificate(ctx context.Context, nodeID string, c store.NodeCertificate) error {
	return p.publish(p.Store.SetNodeCertificate(ctx, nodeID, c), Event{Resource: Node, ID: nodeID})
}

func (p *publishingStore) CreatePool(ctx context.Context, pool store.Pool) error {
	return p.publish(p.Store.CreatePool(ctx, pool), Event{Resource: Pool, Change: Created, ID: pool.ID})
}

func (p *publishingStore) UpdatePool(ctx context.Context, pool store.Pool) error {
	return p.publish(p.Store.UpdatePool(ctx, pool), Event{Resource: Pool, ID: pool.ID})
}

func (p *publishingStore) MarkPoolInitialized(ctx context.Context, poolID, nodeID string) error {
	return p.publish(p.Store.MarkPoolInitialized(ctx, poolID, nodeID), Event{Resource: Pool, ID: poolID})
}

func (p *publishingStore) DeletePool(ctx context.Context, id string) error {
	return p.publish(p.Store.DeletePool(ctx, id), Event{Resource: Pool, Change: Deleted, ID: id}, Event{Resource: Job})
}

func (p *publishingStore) CreateImage(ctx context.Context, im store.Image) error {
	return p.publish(p.Store.CreateImage(ctx, im), Event{Resource: Image, Change: Created, ID: im.ID})
}

func (p *publishingStore) UpdateImage(ctx context.Context, im store.Image) error {
	return p.publish(p.Store.UpdateImage(ctx, im), Event{Resource: Image, ID: im.ID})
}

func (p *publishingStore) DeleteImage(ctx context.Context, id string) error {
	return p.publish(p.Store.DeleteImage(ctx, id), Event{Resource: Image, Change: Deleted, ID: id})
}

// ApplyScan publishes the scan, and the images when it changed any.
func (p *publishingStore) ApplyScan(ctx context.Context, poolID string, c store.ScanChanges) (int, error) {
	skipped, err := p.Store.ApplyScan(ctx, poolID, c)
	evs := []Event{{Resource: Scan, ID: poolID}}
	if len(c.Create)+len(c.Update) > 0 {
		evs = append(evs, Event{Resource: Image})
	}
	return skipped, p.publish(err, evs...)
}

func (p *publishingStore) CreateDownload(ctx context.Context, im store.Image, j store.Job) (store.Job, error) {
	created, err := p.Store.CreateDownload(ctx, im, j)
	return created, p.publish(err, Event{Resource: Image, Change: Created, ID: im.ID},
		Event{Resource: Job, Change: Created, ID: created.ID, Job: &created})
}

func (p *publishingStore) CreateJob(ctx context.Context, j store.Job) (store.Job, error) {
	created, err := p.Store.CreateJob(ctx, j)
	return created, p.publish(err, Event{Resource: Job, Change: Created, ID: created.ID, Job: &created})
}

func (p *publishingStore) UpdateJob(ctx context.Context, j store.Job) error {
	return p.publish(p.Store.UpdateJob(ctx, j), Event{Resource: Job, ID: j.ID, Job: &j})
}

func (p *publishingStore) ClaimJob(ctx context.Context, id, nodeID string, at time.Time) (store.Job, error) {
	j, err := p.Store.ClaimJob(ctx, id, nodeID, at)
	return j, p.publish(err, Event{Resource: Job, ID: id, Job: &j})
}

func (p *publishingStore) FinishJob(ctx context.Context, j store.Job, im store.Image, history ...string) error {
	return p.publish(p.Store.FinishJob(ctx, j, im, history...), Event{Resource: Job, ID: j.ID, Job: &j}, Event{Resource: Image, ID: im.ID})
}

func (p *publishingStore) DiscardJob(ctx context.Context, j store.Job, history ...string) error {
	return p.publish(p.Store.DiscardJob(ctx, j, history...), Event{Resource: Job, ID: j.ID, Job: &j}, Event{Resource: Image, Change: Deleted, ID: j.ImageID})
}

func (p *publishingStore) CreateToken(ctx context.Context, t store.Token) error {
	return p.publish(p.Store.CreateToken(ctx, t), Event{Resource: Token, Change: Created, ID: t.ID})
}

func (p *publishingStore) RevokeToken(ctx context.Context, id string, at time.Time) error {
	return p.publish(p.Store.RevokeToken(ctx, id, at), Event{Resource: Token, ID: id})
}

// DeleteExpiredSSOTokens publishes one deletion of tokens (no id: maybe
// several) when it removed any.
func (p *publishingStore) DeleteExpiredSSOTokens(ctx context.Context, t time.Time) (int, error) {
	n, err := p.Store.DeleteExpiredSSOTokens(ctx, t)
	if n == 0 {
		return n, err
	}
	return n, p.publish(err, Event{Resource: Token, Change: Deleted})
}

func (p *publishingStore) AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error) {
	id, err := p.Store.AppendAudit(ctx, e)
	return id, p.publish(err, Event{Resource: Audit, Change: Created})
}

func (p *publishingStore) Enroll(ctx context.Context, e store.Enrollment) error {
	node := Event{Resource: Node, ID: e.Node.ID}
	if e.Create {
		node.Change = Created
	}
	return p.publish(p.Store.Enroll(ctx, e), node, Event{Resource: Token, ID: e.TokenID})
}
