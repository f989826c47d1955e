package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// Group commit of health checks. Every check of every node is a write:
//   - SQLite commits one writer at a time with an fsync each: at thousands
//     of nodes per health interval the commits alone outran the disk.
//   - On PostgreSQL a check on its own is a transaction of five or so
//     round trips (begin, the fence, the node, its mounts, commit): at
//     5,000 nodes, 1,000 a second held most of the pool's connections, and
//     API requests waited for one behind them.
//
// A check that finds the turn taken queues; whoever takes the turn next
// commits the queued checks (up to maxGroup) in one transaction. The turn
// is the writer's on SQLite, one of checkGroups on PostgreSQL, where
// groups commit side by side. A caller returns once its own check is
// committed (or failed), as before.

// checkGroups is how many groups of checks PostgreSQL commits at once,
// each on one of the pool's connections.
const checkGroups = 4

// maxGroup bounds a group, and so its transaction and the list of nodes
// whose mounts it reads: the checks queued past it wait for the next turn.
const maxGroup = 256

// nodeCheck is one RecordNodeCheck call waiting to be written.
type nodeCheck struct {
	nodeID string
	st     store.NodeStatus
	mounts []store.PoolMount
	digest string // of mounts (mountsDigest), when not nil
	// fence is the caller's (store.FenceFrom, fenced false: none): a
	// group holds checks of one fence, and its transaction carries it, so
	// a leader's checks are never written unfenced with a request's.
	fence  store.Fence
	fenced bool
	done   chan error // buffered: the committer never blocks
}

func (c *nodeCheck) sameFence(o *nodeCheck) bool {
	return c.fenced == o.fenced && c.fence.Epoch == o.fence.Epoch
}

// groupTimeout bounds a group's transaction: it runs on behalf of callers
// whose contexts the committer does not hold.
const groupTimeout = 10 * time.Second

// recordGrouped queues c and waits until it is committed, committing
// groups from the queue itself, until its own is, when it gets a turn
// first.
func (s *Store) recordGrouped(ctx context.Context, c *nodeCheck) error {
	c.done = make(chan error, 1)
	c.fence, c.fenced = store.FenceFrom(ctx)
	s.checksMu.Lock()
	s.checks = append(s.checks, c)
	s.checksMu.Unlock()

	unlock, err := take(ctx, s.checkTurn)
	if err != nil {
		// Taken by a committer meanwhile, or withdrawn now.
		if s.withdraw(c) {
			return err
		}
		return <-c.done
	}
	defer unlock()
	for {
		select {
		case err := <-c.done:
			return err
		default:
		}
		group := s.nextGroup()
		if len(group) == 0 {
			return <-c.done // an earlier turn took it
		}
		s.commitGroup(group)
	}
}

// nextGroup takes the first queued check and, in order, up to maxGroup-1
// more of the same fence out of the queue.
func (s *Store) nextGroup() []*nodeCheck {
	s.checksMu.Lock()
	defer s.checksMu.Unlock()
	if len(s.checks) == 0 {
		return nil
	}
	head := s.checks[0]
	var group []*nodeCheck
	rest := s.checks[:0] // filtered in place: rest never passes the loop
	for _, c := range s.checks {
		if len(group) < maxGroup && c.sameFence(head) {
			group = append(group, c)
		} else {
			rest = append(rest, c)
		}
	}
	clear(s.checks[len(rest):])
	if s.checks = rest; len(rest) == 0 {
		s.checks = nil
	}
	return group
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

// commitGroup writes the group in one transaction, holding a check turn.
// When that fails, each check is written on its own, so one bad
// check (its node deleted meanwhile) fails only its caller.
func (s *Store) commitGroup(group []*nodeCheck) {
	ctx := context.Background()
	if group[0].fenced {
		ctx = store.WithFence(ctx, group[0].fence)
	}
	ctx, cancel := context.WithTimeout(ctx, groupTimeout)
	defer cancel()
	err := s.txLocked(ctx, func(t *txn) error {
		recorded, err := t.recordedMounts(ctx, group)
		if err != nil {
			return err
		}
		if err := t.updateNodeRows(ctx, group); err != nil {
			return err
		}
		for _, c := range group {
			rec := recorded[c.nodeID]
			// A node checked twice in one group: its first check may
			// have changed what was read, so the second reads again.
			delete(recorded, c.nodeID)
			if err := t.recordMounts(ctx, c, rec); err != nil {
				return err
			}
		}
		return t.writeMounts(ctx)
	})
	if err == nil || len(group) == 1 {
		for _, c := range group {
			c.done <- err
		}
		return
	}
	for _, c := range group {
		c.done <- s.txLocked(ctx, func(t *txn) error { return t.recordNodeCheck(ctx, c, nil) })
	}
}

// recordedMounts is what a node's last check wrote of its pool mounts.
type recordedMounts struct {
	digest string // that check's nodeCheck.digest
	// mounts are the rows, by pool: read only for a check that reports
	// something else.
	mounts map[string]store.PoolMount
}

// unchanged reports whether check c found the node's pools as its rows
// say: then c writes only the node's row. At thousands of nodes, reading
// every node's rows at every check was most of what a check cost (a node
// reports on every shared pool, mounted or not).
func (r *recordedMounts) unchanged(c *nodeCheck) bool {
	return r != nil && r.digest != "" && r.digest == c.digest
}

// recordedMounts reads, for the checks that report on pools, what their
// nodes' last checks wrote, in two queries at most: every node's digest,
// then the rows of the nodes whose checks are not unchanged.
func (t *txn) recordedMounts(ctx context.Context, checks []*nodeCheck) (map[string]*recordedMounts, error) {
	out := make(map[string]*recordedMounts, len(checks))
	var ids []string
	for _, c := range checks {
		if _, ok := out[c.nodeID]; c.mounts != nil && !ok {
			out[c.nodeID] = nil
			ids = append(ids, c.nodeID)
		}
	}
	if len(ids) == 0 {
		return out, nil
	}
	in, args := t.s.in(ids)
	_, err := queryAll(ctx, t, t.s.q(`SELECT id, mounts_digest FROM nodes WHERE id `+in), args, func(r scanner) (struct{}, error) {
		var (
			rec recordedMounts
			id  string
		)
		if err := r.Scan(&id, &rec.digest); err != nil {
			return struct{}{}, err
		}
		out[id] = &rec
		return struct{}{}, nil
	})
	if err != nil {
		return nil, err
	}
	var read []string
	for _, c := range checks {
		if rec := out[c.nodeID]; rec != nil && c.mounts != nil && rec.mounts == nil && !rec.unchanged(c) {
			rec.mounts = map[string]store.PoolMount{} // read below; listed once
			read = append(read, c.nodeID)
		}
	}
	rows, err := t.nodeMounts(ctx, read...)
	for id, ms := range rows {
		out[id].mounts = ms
	}
	return out, err
}

// mountsDigest is a digest of what a check found of a node's pools, in any
// order: the fields sameMount compares, by pool. It is the sum of the
// mounts' own digests, which needs no sorted copy of the mounts at every
// check (that copy was 7 % of a busy control plane's garbage).
func mountsDigest(mounts []store.PoolMount) string {
	var (
		sum [2]uint64
		buf [256]byte
	)
	for _, m := range mounts {
		b := buf[:0]
		for _, s := range []string{m.PoolID, m.Reason} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
		b = binary.AppendUvarint(b, m.FreeBytes)
		b = binary.AppendUvarint(b, m.TotalBytes)
		b = append(b, byte(boolToDB(m.Mounted)))
		h := sha256.Sum256(b)
		sum[0] += binary.BigEndian.Uint64(h[:8])
		sum[1] += binary.BigEndian.Uint64(h[8:16])
	}
	out := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, sum[0]), sum[1])
	return hex.EncodeToString(out)
}

// rowsBatch is how many rows one statement of updateNodeRows and
// writeMounts writes. A statement per row was most of a group's time on
// PostgreSQL: 256 checks made thousands of round trips when their nodes'
// mounts were rewritten (then once a minute; now when they change),
// several seconds a group on a busy machine, while the checks waiting on
// it held the health loop's slots (5,000 nodes were checked every 10 to
// 20 s instead of 5).
const rowsBatch = 32

// updateFromValues is an UPDATE of table that sets cols from rowsBatch
// rows of values, matched on the first keys of cols; types are the
// columns' SQL types, cast to for PostgreSQL.
func updateFromValues(table string, keys int, cols, types []string) string {
	row := make([]string, len(cols))
	for i, typ := range types {
		row[i] = "CAST(? AS " + typ + ")"
	}
	rows := strings.TrimSuffix(strings.Repeat("("+strings.Join(row, ", ")+"), ", rowsBatch), ", ")
	var set, match []string
	for i, c := range cols {
		if i < keys {
			match = append(match, table+"."+c+" = v."+c)
		} else {
			set = append(set, c+" = v."+c)
		}
	}
	return "WITH v (" + strings.Join(cols, ", ") + ") AS (VALUES " + rows + ") UPDATE " + table +
		" SET " + strings.Join(set, ", ") + " FROM v WHERE " + strings.Join(match, " AND ")
}

// updateByID is an UPDATE of one row of table, found by cols[0], that sets
// the other cols.
func updateByID(table string, cols []string) string {
	return "UPDATE " + table + " SET " + strings.Join(cols[1:], " = ?, ") + " = ? WHERE " + cols[0] + " = ?"
}

var (
	nodeRowColumns     = []string{"id", "state", "state_reason", "state_since", "last_checked_at", "hostname", "agent_version"}
	nodeRowTypes       = []string{"TEXT", "TEXT", "TEXT", "BIGINT", "BIGINT", "TEXT", "TEXT"}
	seenNodeRowColumns = slices.Concat(nodeRowColumns, []string{"mounts_seen_at"})
	// The rows of nodes whose checks failed, then of those a check found,
	// with mounts_seen_at: a batch of them, or one.
	updateNodeRowsSQL     = updateFromValues("nodes", 1, nodeRowColumns, nodeRowTypes)
	updateSeenNodeRowsSQL = updateFromValues("nodes", 1, seenNodeRowColumns, slices.Concat(nodeRowTypes, []string{"BIGINT"}))
	updateNodeRowSQL      = updateByID("nodes", nodeRowColumns)
	updateSeenNodeRowSQL  = updateByID("nodes", seenNodeRowColumns)
	updateMountsSQL       = updateFromValues("pool_mounts", 2,
		[]string{"node_id", "pool_id", "mounted", "reason", "free_bytes", "total_bytes", "checked_at"},
		[]string{"TEXT", "TEXT", "INTEGER", "TEXT", "BIGINT", "BIGINT", "BIGINT"})
)

// updateRows runs query, an updateFromValues, over rows (of distinct
// keys), rowsBatch at a time; a batch not full repeats its last row,
// which changes nothing more. It returns how many rows were updated.
func (t *txn) updateRows(ctx context.Context, query string, rows [][]any) (int64, error) {
	var updated int64
	for batch := range slices.Chunk(rows, rowsBatch) {
		args := make([]any, 0, rowsBatch*len(batch[0]))
		for i := range rowsBatch {
			args = append(args, batch[min(i, len(batch)-1)]...)
		}
		res, err := t.exec(ctx, query, args...)
		if err != nil {
			return updated, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return updated, err
		}
		updated += n
	}
	return updated, nil
}

// updateNodeRows writes the node rows of checks, rowsBatch at a time: a
// node checked twice gets its last check's status, and the last time a
// check of it found its pools as its mounts_seen_at. It fails when a node
// is gone, naming it when the checks are of one node (a group is then
// written check by check).
func (t *txn) updateNodeRows(ctx context.Context, checks []*nodeCheck) error {
	last := make(map[string]*nodeCheck, len(checks))
	seen := make(map[string]time.Time)
	var ids []string
	for _, c := range checks {
		if _, ok := last[c.nodeID]; !ok {
			ids = append(ids, c.nodeID)
		}
		last[c.nodeID] = c
		if c.mounts != nil && c.st.LastCheckedAt.After(seen[c.nodeID]) {
			seen[c.nodeID] = c.st.LastCheckedAt
		}
	}
	var rows, seenRows [][]any // in nodeRowColumns' and seenNodeRowColumns' order
	for _, id := range ids {
		st := last[id].st
		row := []any{id, string(st.State), st.StateReason, micros(st.StateSince), micros(st.LastCheckedAt), st.Hostname, st.AgentVersion}
		if at, ok := seen[id]; ok {
			seenRows = append(seenRows, append(row, micros(at)))
		} else {
			rows = append(rows, row)
		}
	}
	if len(checks) == 1 {
		query, one := updateNodeRowSQL, rows
		if len(seenRows) == 1 {
			query, one = updateSeenNodeRowSQL, seenRows
		}
		res, err := t.exec(ctx, query, slices.Concat(one[0][1:], one[0][:1])...) // the id last
		if err != nil {
			return err
		}
		return mustAffect(res, "node "+checks[0].nodeID)
	}
	n, err := t.updateRows(ctx, updateNodeRowsSQL, rows)
	if err == nil {
		var m int64
		m, err = t.updateRows(ctx, updateSeenNodeRowsSQL, seenRows)
		n += m
	}
	if err == nil && n != int64(len(ids)) {
		err = fmt.Errorf("record checks: %d of %d nodes are gone: %w", int64(len(ids))-n, len(ids), store.ErrNotFound)
	}
	return err
}

// writeMounts rewrites the pool mount rows recordMounts left to it, a
// batch of rows a statement, and forgets them. A row gone meanwhile (its
// pool deleted) stays gone.
func (t *txn) writeMounts(ctx context.Context) error {
	rows := make([][]any, len(t.mountWrites))
	for i, m := range t.mountWrites {
		rows[i] = []any{m.NodeID, m.PoolID, boolToDB(m.Mounted), m.Reason, bytesToDB(m.FreeBytes), bytesToDB(m.TotalBytes), micros(m.CheckedAt)}
	}
	t.mountWrites = t.mountWrites[:0]
	_, err := t.updateRows(ctx, updateMountsSQL, rows)
	return err
}
