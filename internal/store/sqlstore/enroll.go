package sqlstore

import (
	"context"
	"fmt"

	"github.com/quarry-project/quarry/internal/store"
)

// Enroll records an enrollment in one transaction (store.NodeStore).
func (s *Store) Enroll(ctx context.Context, e store.Enrollment) error {
	return s.tx(ctx, func(t *txn) error {
		if _, err := t.useToken(ctx, e.TokenID, e.UsedAt); err != nil {
			return err
		}
		n := e.Node
		if e.Create {
			n.Certificate = store.NodeCertificate{}
			if err := t.createNode(ctx, n); err != nil {
				return err
			}
		} else {
			var serial string
			if err := t.queryRow(ctx, `SELECT cert_serial FROM nodes WHERE id = ?`, n.ID).Scan(&serial); err != nil {
				return notFound(err, "node "+n.ID)
			}
			if serial != e.PreviousSerial {
				return fmt.Errorf("node %s: its certificate changed while it was enrolling: %w", n.Name, store.ErrConflict)
			}
			_, err := t.exec(ctx, `UPDATE nodes SET address = ? WHERE id = ?`, n.Address, n.ID)
			if t.s.isUnique(err) {
				return fmt.Errorf("node %q at %s: %w", n.Name, n.Address, store.ErrConflict)
			}
			if err != nil {
				return err
			}
		}
		c := e.Cert
		_, err := t.exec(ctx, `UPDATE nodes SET cert_serial = ?, cert_not_after = ?, cert_issued_at = ?, cert_key_hash = ? WHERE id = ?`,
			c.Serial, micros(c.NotAfter), micros(c.IssuedAt), c.KeyHash, n.ID)
		return err
	})
}
