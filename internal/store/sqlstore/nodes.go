package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/quarry-project/quarry/internal/store"
)

const nodeColumns = `id, name, address, state, state_reason, state_since, last_checked_at, mounts_seen_at, hostname, agent_version,
	created_at, cert_serial, cert_not_after, cert_issued_at, cert_key_hash`

type scanner interface{ Scan(dest ...any) error }

// queryAll runs a query and scans every row with scan.
// querier is the store's database or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// in is what follows a column in a condition that it is one of ids, and
// its arguments: one parameter, the ids as a JSON array
// (store.Dialect.InJSON).
func (s *Store) in(ids []string) (string, []any) {
	list, err := json.Marshal(ids)
	if err != nil {
		panic(err) // strings always encode
	}
	return s.d.InJSON, []any{string(list)}
}

func queryAll[T any](ctx context.Context, db querier, query string, args []any, scan func(scanner) (T, error)) ([]T, error) {
	return queryCap(ctx, db, query, args, 0, scan)
}

// queryCap is queryAll with room made for n rows at once (a page's):
// growing the slice row by row allocated one and a half pages' rows again.
func queryCap[T any](ctx context.Context, db querier, query string, args []any, n int, scan func(scanner) (T, error)) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	if n > 0 {
		out = make([]T, 0, n)
	}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// row is how the rows of a query scan into T: it returns fresh
// destinations for Scan and a function that builds a T from what a row
// scanned into them.
type row[T any] func() (dest []any, value func() T)

// reusing returns a scan function whose every row reuses one set of
// destinations. Declared for each row, they escaped to the heap at every
// Scan: at 5,000 nodes, with their mounts read thousands of rows a second,
// that was a tenth of the control plane's garbage. The function serves one
// query at a time.
func (rw row[T]) reusing() func(scanner) (T, error) {
	dest, value := rw()
	return func(r scanner) (T, error) {
		err := r.Scan(dest...)
		return value(), err
	}
}

// nodeRow scans nodeColumns.
var nodeRow row[store.Node] = func() ([]any, func() store.Node) {
	var (
		n                                              store.Node
		state                                          string
		stateSince, lastChecked, mountsSeen, createdAt int64
		certNotAfter, certIssuedAt                     int64
	)
	return []any{&n.ID, &n.Name, &n.Address, &state, &n.StateReason, &stateSince, &lastChecked, &mountsSeen,
			&n.Hostname, &n.AgentVersion, &createdAt,
			&n.Certificate.Serial, &certNotAfter, &certIssuedAt, &n.Certificate.KeyHash},
		func() store.Node {
			n.State = store.NodeState(state)
			n.StateSince = fromMicros(stateSince)
			n.LastCheckedAt = fromMicros(lastChecked)
			n.MountsSeenAt = fromMicros(mountsSeen)
			n.CreatedAt = fromMicros(createdAt)
			n.Certificate.NotAfter = fromMicros(certNotAfter)
			n.Certificate.IssuedAt = fromMicros(certIssuedAt)
			return n
		}
}

// CreateNode inserts n. A node without a state is one never checked, so it
// is stored as UNKNOWN.
func (s *Store) CreateNode(ctx context.Context, n store.Node) error {
	if n.ID == "" {
		return errors.New("create node: empty id")
	}
	if n.State == "" {
		n.State = store.NodeUnknown
	}
	return s.tx(ctx, func(t *txn) error { return t.createNode(ctx, n) })
}

// createNode inserts n inside a transaction (CreateNode).
func (t *txn) createNode(ctx context.Context, n store.Node) error {
	// Looked up first so the error can say which key collided; the
	// unique constraints below remain the guarantee.
	if err := t.nodeTaken(ctx, n); err != nil {
		return err
	}
	_, err := t.exec(ctx, `INSERT INTO nodes (`+nodeColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		n.ID, n.Name, n.Address, string(n.State), n.StateReason, micros(n.StateSince),
		micros(n.LastCheckedAt), micros(n.MountsSeenAt), n.Hostname, n.AgentVersion, micros(n.CreatedAt),
		n.Certificate.Serial, micros(n.Certificate.NotAfter), micros(n.Certificate.IssuedAt), n.Certificate.KeyHash)
	if t.s.isUnique(err) {
		return fmt.Errorf("node %q at %s: %w", n.Name, n.Address, store.ErrConflict)
	}
	return err
}

// nodeTaken returns ErrConflict naming the first of n's id, name and address
// that another node already has.
func (t *txn) nodeTaken(ctx context.Context, n store.Node) error {
	rows, err := t.QueryContext(ctx, t.s.q(`SELECT id, name, address FROM nodes WHERE id = ? OR name = ? OR address = ?`),
		n.ID, n.Name, n.Address)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, name, addr string
		if err := rows.Scan(&id, &name, &addr); err != nil {
			return err
		}
		switch {
		case name == n.Name:
			return fmt.Errorf("node name %q: %w", n.Name, store.ErrConflict)
		case addr == n.Address:
			return fmt.Errorf("node address %s is registered as node %q: %w", n.Address, name, store.ErrConflict)
		default:
			return fmt.Errorf("node id %s: %w", n.ID, store.ErrConflict)
		}
	}
	return rows.Err()
}

// GetNode returns the node with id.
func (s *Store) GetNode(ctx context.Context, id string) (store.Node, error) {
	n, err := nodeRow.reusing()(s.db.QueryRowContext(ctx, s.q(`SELECT `+nodeColumns+` FROM nodes WHERE id = ?`), id))
	return n, notFound(err, "node "+id)
}

// GetNodeByName returns the node called name.
func (s *Store) GetNodeByName(ctx context.Context, name string) (store.Node, error) {
	n, err := nodeRow.reusing()(s.db.QueryRowContext(ctx, s.q(`SELECT `+nodeColumns+` FROM nodes WHERE name = ?`), name))
	return n, notFound(err, fmt.Sprintf("node %q", name))
}

// GetNodeByAddress returns the node at the management address.
func (s *Store) GetNodeByAddress(ctx context.Context, address string) (store.Node, error) {
	n, err := nodeRow.reusing()(s.db.QueryRowContext(ctx, s.q(`SELECT `+nodeColumns+` FROM nodes WHERE address = ?`), address))
	return n, notFound(err, "node at "+address)
}

// ListNodes returns every node ordered by name.
func (s *Store) ListNodes(ctx context.Context) ([]store.Node, error) {
	return queryAll(ctx, s.db, s.q(`SELECT `+nodeColumns+` FROM nodes ORDER BY name`), nil, nodeRow.reusing())
}

// NodeIDs returns every node's id.
func (s *Store) NodeIDs(ctx context.Context) ([]string, error) {
	return queryAll(ctx, s.db, `SELECT id FROM nodes`, nil, func(r scanner) (id string, err error) {
		err = r.Scan(&id)
		return id, err
	})
}

// GetNodes returns the nodes with ids, by name.
func (s *Store) GetNodes(ctx context.Context, ids ...string) ([]store.Node, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	in, args := s.in(ids)
	return queryAll(ctx, s.db, s.q(`SELECT `+nodeColumns+` FROM nodes WHERE id `+in+` ORDER BY name`), args, nodeRow.reusing())
}

// nodePages pages nodes by name: unique, and served by its unique index
// (and, under a state filter, by the index of migration 0011). A node
// renamed while a client walks the list may move across its position.
var nodePages = keyset[store.Node]{
	list: "nodes", cols: `(name)`, strings: 1,
	args:   func(c store.Cursor) []any { return []any{c.Strings[0]} },
	cursor: func(n store.Node) store.Cursor { return store.Cursor{Strings: []string{n.Name}} },
}

// ListNodesPage returns one page of the nodes matching f, by name.
func (s *Store) ListNodesPage(ctx context.Context, f store.NodeFilter, p store.Page) ([]store.Node, string, error) {
	var w where
	if f.State != "" {
		w.add(`state = ?`, string(f.State))
	}
	w.search(f.Search, `name`, `address`, `hostname`, `agent_version`, `state_reason`)
	return page(ctx, s, nodePages, `SELECT `+nodeColumns+` FROM nodes`, w, f, p, nodeRow.reusing())
}

// UpdateNode sets the name and management address of node id.
func (s *Store) UpdateNode(ctx context.Context, id, name, address string) error {
	res, err := s.exec(ctx, `UPDATE nodes SET name = ?, address = ? WHERE id = ?`, name, address, id)
	if s.isUnique(err) {
		return fmt.Errorf("node name %q or address %s: %w", name, address, store.ErrConflict)
	}
	if err != nil {
		return err
	}
	return mustAffect(res, "node "+id)
}

// DeleteNode removes node id; its mounts go with it by cascade.
func (s *Store) DeleteNode(ctx context.Context, id string) error {
	return s.tx(ctx, func(t *txn) error {
		// Asked first so the error can name the pools; the foreign key
		// from pool_assignments remains the guarantee.
		pools, err := t.poolsAssignedTo(ctx, id)
		if err != nil {
			return err
		}
		if len(pools) > 0 {
			return fmt.Errorf("node %s is assigned to pool(s) %s: %w", id, strings.Join(pools, ", "), store.ErrInUse)
		}
		res, err := t.exec(ctx, `DELETE FROM nodes WHERE id = ?`, id)
		if s.isForeignKey(err) {
			return fmt.Errorf("node %s is assigned to a pool: %w", id, store.ErrInUse)
		}
		if err != nil {
			return err
		}
		return mustAffect(res, "node "+id)
	})
}

// poolsAssignedTo returns the quoted names of the pools listing node id.
func (t *txn) poolsAssignedTo(ctx context.Context, id string) ([]string, error) {
	rows, err := t.QueryContext(ctx, t.s.q(`SELECT p.name FROM pool_assignments a JOIN pools p ON p.id = a.pool_id
		WHERE a.node_id = ? ORDER BY p.name`), id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		names = append(names, fmt.Sprintf("%q", name))
	}
	return names, rows.Err()
}

// RecordNodeCheck stores one health check's outcome. Checks that arrive
// while others are being committed are committed together (checks.go).
func (s *Store) RecordNodeCheck(ctx context.Context, nodeID string, st store.NodeStatus, mounts []store.PoolMount) error {
	for _, m := range mounts {
		if m.NodeID != "" && m.NodeID != nodeID {
			return fmt.Errorf("record check of node %s: mount of pool %s belongs to node %s", nodeID, m.PoolID, m.NodeID)
		}
	}
	c := &nodeCheck{nodeID: nodeID, st: st, mounts: mounts}
	if mounts != nil {
		c.digest = mountsDigest(mounts)
	}
	return s.recordGrouped(ctx, c)
}

// recordNodeCheck writes check c inside a transaction. rec is what the
// node's mounts were, read with the rest of its group; nil: read here.
func (t *txn) recordNodeCheck(ctx context.Context, c *nodeCheck, rec *recordedMounts) error {
	if err := t.updateNodeRows(ctx, []*nodeCheck{c}); err != nil {
		return err
	}
	if err := t.recordMounts(ctx, c, rec); err != nil {
		return err
	}
	return t.writeMounts(ctx)
}

// recordMounts writes what check c found of its node's pools, when that
// changed, but for the rows it rewrites: it leaves these to writeMounts.
// The node's row is written already. rec is as for recordNodeCheck.
func (t *txn) recordMounts(ctx context.Context, c *nodeCheck, rec *recordedMounts) error {
	if c.mounts == nil {
		return nil
	}
	if rec == nil {
		// What an earlier check of the group wrote is read back.
		if err := t.writeMounts(ctx); err != nil {
			return err
		}
		recs, err := t.recordedMounts(ctx, []*nodeCheck{c})
		if err != nil {
			return err
		}
		rec = recs[c.nodeID]
	}
	if rec == nil {
		rec = &recordedMounts{} // not read: compared with no rows
	}
	if rec.unchanged(c) {
		return nil
	}
	old := rec.mounts
	// Pools the node reported on before still exist (a pool's deletion
	// takes its mounts along); only new ones need looking up.
	var ids []string
	for _, m := range c.mounts {
		if _, had := old[m.PoolID]; !had {
			ids = append(ids, m.PoolID)
		}
	}
	pools, err := t.poolIDs(ctx, ids)
	if err != nil {
		return err
	}
	for id := range old {
		pools[id] = true
	}
	seen := make(map[string]bool, len(c.mounts))
	for _, m := range c.mounts {
		// A pool deleted while the agent was being asked about it is
		// simply gone; failing would also throw away the node's status.
		if !pools[m.PoolID] {
			continue
		}
		if seen[m.PoolID] {
			return fmt.Errorf("record check of node %s: pool %s reported twice: %w", c.nodeID, m.PoolID, store.ErrConflict)
		}
		seen[m.PoolID] = true
		o, had := old[m.PoolID]
		switch {
		case !had:
			_, err = t.exec(ctx, `INSERT INTO pool_mounts (node_id, pool_id, mounted, reason, free_bytes, total_bytes, checked_at)
				VALUES (?, ?, ?, ?, ?, ?, ?)`,
				c.nodeID, m.PoolID, boolToDB(m.Mounted), m.Reason, bytesToDB(m.FreeBytes), bytesToDB(m.TotalBytes), micros(m.CheckedAt))
		case sameMount(o, m):
			// Nothing new: the row stays, and the node's MountsSeenAt says
			// it was found so again.
		default:
			m.NodeID = c.nodeID
			t.mountWrites = append(t.mountWrites, m) // written by writeMounts
		}
		if t.s.isForeignKey(err) {
			// Only on backends where a concurrent DeletePool can slip
			// in after poolIDs; the next check records the new truth.
			return fmt.Errorf("record check of node %s: pool %s: %w", c.nodeID, m.PoolID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
	}
	for id := range old {
		if !seen[id] {
			if _, err := t.exec(ctx, `DELETE FROM pool_mounts WHERE node_id = ? AND pool_id = ?`, c.nodeID, id); err != nil {
				return err
			}
		}
	}
	_, err = t.exec(ctx, `UPDATE nodes SET mounts_digest = ? WHERE id = ?`, c.digest, c.nodeID)
	return err
}

// sameMount reports whether a check found a pool as it was recorded.
func sameMount(a, b store.PoolMount) bool {
	return a.Mounted == b.Mounted && a.Reason == b.Reason && a.FreeBytes == b.FreeBytes && a.TotalBytes == b.TotalBytes
}

// nodeMounts returns the recorded mounts of the nodes with nodeIDs, by
// node, then pool: an empty map for a node that has none.
func (t *txn) nodeMounts(ctx context.Context, nodeIDs ...string) (map[string]map[string]store.PoolMount, error) {
	out := make(map[string]map[string]store.PoolMount, len(nodeIDs))
	for _, id := range nodeIDs {
		out[id] = map[string]store.PoolMount{}
	}
	if len(nodeIDs) == 0 {
		return out, nil
	}
	ms, err := t.s.mountsOn(ctx, t, "node_id", nodeIDs...)
	for _, m := range ms {
		out[m.NodeID][m.PoolID] = m
	}
	return out, err
}

// SetNodeCertificate records the certificate node nodeID's agent holds,
// replacing the one recorded before.
func (s *Store) SetNodeCertificate(ctx context.Context, nodeID string, c store.NodeCertificate) error {
	res, err := s.exec(ctx, `UPDATE nodes SET cert_serial = ?, cert_not_after = ?, cert_issued_at = ?, cert_key_hash = ? WHERE id = ?`,
		c.Serial, micros(c.NotAfter), micros(c.IssuedAt), c.KeyHash, nodeID)
	if err != nil {
		return err
	}
	return mustAffect(res, "node "+nodeID)
}

// poolIDs returns which of ids are existing pools' ids. Only those are
// asked for: a health check runs it for every node, and all pools of the
// cluster per check made every round cost nodes × pools rows.
func (t *txn) poolIDs(ctx context.Context, ids []string) (map[string]bool, error) {
	found := make(map[string]bool, len(ids))
	if len(ids) == 0 {
		return found, nil
	}
	in, args := t.s.in(ids)
	_, err := queryAll(ctx, t, t.s.q(`SELECT id FROM pools WHERE id `+in), args, func(r scanner) (string, error) {
		var id string
		if err := r.Scan(&id); err != nil {
			return "", err
		}
		found[id] = true
		return id, nil
	})
	return found, err
}

// ListPoolMounts returns the mounts of the pools with poolIDs (none: every
// mount) ordered by pool, then node.
func (s *Store) ListPoolMounts(ctx context.Context, poolIDs ...string) ([]store.PoolMount, error) {
	if len(poolIDs) == 0 {
		return s.mounts(ctx, "")
	}
	return s.mounts(ctx, "pool_id", poolIDs...)
}

// ListNodeMounts returns the mounts of the nodes with nodeIDs ordered by
// pool, then node.
func (s *Store) ListNodeMounts(ctx context.Context, nodeIDs ...string) ([]store.PoolMount, error) {
	if len(nodeIDs) == 0 {
		return nil, nil
	}
	return s.mounts(ctx, "node_id", nodeIDs...)
}

// PoolUsages sums up the mounts of every pool, by pool.
func (s *Store) PoolUsages(ctx context.Context) ([]store.PoolUsage, error) {
	return queryAll(ctx, s.db, poolUsagesSQL, nil, func(r scanner) (store.PoolUsage, error) {
		var (
			u           store.PoolUsage
			free, total int64
		)
		err := r.Scan(&u.PoolID, &u.MountedNodes, &free, &total)
		u.FreeBytes, u.TotalBytes = bytesFromDB(free), bytesFromDB(total)
		return u, err
	})
}

// poolUsagesSQL reads only the index of migration 0020.
const poolUsagesSQL = `SELECT pool_id, SUM(mounted),
	COALESCE(MIN(CASE WHEN mounted = 1 THEN free_bytes END), 0),
	COALESCE(MAX(CASE WHEN mounted = 1 THEN total_bytes END), 0)
	FROM pool_mounts GROUP BY pool_id ORDER BY pool_id`

// mounts returns the mounts whose column col is one of ids (col "": every
// mount) ordered by pool, then node; by node, then pool when col is
// "node_id": the primary key's order, read without sorting (a page of a
// thousand nodes has tens of thousands of mounts).
func (s *Store) mounts(ctx context.Context, col string, ids ...string) ([]store.PoolMount, error) {
	return s.mountsOn(ctx, s.db, col, ids...)
}

// mountsOn is mounts, read through db (the store's, or a transaction).
func (s *Store) mountsOn(ctx context.Context, db querier, col string, ids ...string) ([]store.PoolMount, error) {
	where, args, order := "", []any(nil), `pool_id, node_id`
	if col != "" {
		var in string
		in, args = s.in(ids)
		where = `WHERE ` + col + ` ` + in
	}
	if col == "node_id" {
		order = `node_id, pool_id`
	}
	return queryAll(ctx, db, s.q(`SELECT `+mountColumns+` FROM pool_mounts `+where+` ORDER BY `+order), args, mountRow.reusing())
}

const mountColumns = `node_id, pool_id, mounted, reason, free_bytes, total_bytes, checked_at`

// mountRow scans mountColumns.
var mountRow row[store.PoolMount] = func() ([]any, func() store.PoolMount) {
	var (
		m                      store.PoolMount
		mounted                int
		free, total, checkedAt int64
	)
	return []any{&m.NodeID, &m.PoolID, &mounted, &m.Reason, &free, &total, &checkedAt}, func() store.PoolMount {
		m.Mounted = mounted != 0
		m.FreeBytes, m.TotalBytes = bytesFromDB(free), bytesFromDB(total)
		m.CheckedAt = fromMicros(checkedAt)
		return m
	}
}
