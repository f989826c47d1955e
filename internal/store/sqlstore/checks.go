package sqlstore

import (
	"context"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// Group commit of health checks (SQLite). Every check of every node is a
// write, and SQLite commits one writer at a time with an fsync each: at
// thousands of nodes per health interval the commits alone outran the
// disk. A check that finds another write running queues; whoever takes the
// writer's turn next commits every queued check in one transaction. A
// caller returns once its own check is committed (or failed), as before.

// nodeCheck is one RecordNodeCheck call waiting to be written.
type nodeCheck struct {
	nodeID string
	st     store.NodeStatus
	mounts []store.PoolMount
	done   chan error // buffered: the committer never blocks
}

// groupTimeout bounds a group's transaction: it runs on behalf of callers
// whose contexts the committer does not hold.
const groupTimeout = 10 * time.Second

// recordGrouped queues c and waits until it is committed, committing the
// queue itself when it gets the writer's turn first.
func (s *Store) recordGrouped(ctx context.Context, c *nodeCheck) error {
	c.done = make(chan error, 1)
	s.checksMu.Lock()
	s.checks = append(s.checks, c)
	s.checksMu.Unlock()

	unlock, err := s.lockWrite(ctx)
	if err != nil {
		// Taken by a committer meanwhile, or withdrawn now.
		if s.withdraw(c) {
			return err
		}
		return <-c.done
	}
	defer unlock()
	s.checksMu.Lock()
	group := s.checks
	s.checks = nil
	s.checksMu.Unlock()
	if len(group) == 0 {
		return <-c.done // an earlier turn committed it
	}
	s.commitGroup(context.WithoutCancel(ctx), group)
	return <-c.done
}

// withdraw removes c from the queue; false when a committer took it.
func (s *Store) withdraw(c *nodeCheck) bool {
	s.checksMu.Lock()
	defer s.checksMu.Unlock()
	for i, q := range s.checks {
		if q == c {
			s.checks = append(s.checks[:i], s.checks[i+1:]...)
			return true
		}
	}
	return false
}

// commitGroup writes the group in one transaction, holding the writer's
// turn. When that fails, each check is written on its own, so one bad
// check (its node deleted meanwhile) fails only its caller.
func (s *Store) commitGroup(ctx context.Context, group []*nodeCheck) {
	ctx, cancel := context.WithTimeout(ctx, groupTimeout)
	defer cancel()
	err := s.txLocked(ctx, func(t *txn) error {
		for _, c := range group {
			if err := t.recordNodeCheck(ctx, c.nodeID, c.st, c.mounts); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || len(group) == 1 {
		for _, c := range group {
			c.done <- err
		}
		return
	}
	for _, c := range group {
		c.done <- s.txLocked(ctx, func(t *txn) error { return t.recordNodeCheck(ctx, c.nodeID, c.st, c.mounts) })
	}
}
