package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

func auditEntry(i int) store.AuditEntry {
	return store.AuditEntry{
		Time:       at(time.Duration(i) * time.Second),
		Actor:      fmt.Sprintf("token:t%d", i),
		Role:       store.RoleAdmin,
		Procedure:  "/quarry.v1.NodeService/CreateNode",
		Target:     fmt.Sprintf("node/n%d", i),
		Result:     "ok",
		Message:    "",
		RemoteAddr: "192.0.2.1:54321",
	}
}

// appendAudit appends n entries and returns them with their ids, oldest
// first.
func appendAudit(t *testing.T, s store.Store, n int) []store.AuditEntry {
	t.Helper()
	var out []store.AuditEntry
	for i := range n {
		e := auditEntry(i)
		id, err := s.AppendAudit(context.Background(), e)
		if err != nil {
			t.Fatalf("AppendAudit(%d): %v", i, err)
		}
		e.ID = id
		out = append(out, e)
	}
	return out
}

func mustListAudit(t *testing.T, s store.Store, beforeID int64, limit int) []store.AuditEntry {
	t.Helper()
	es, err := s.ListAudit(context.Background(), beforeID, limit)
	if err != nil {
		t.Fatalf("ListAudit(%d, %d): %v", beforeID, limit, err)
	}
	return es
}

// newestFirst returns es reversed.
func newestFirst(es []store.AuditEntry) []store.AuditEntry {
	out := make([]store.AuditEntry, len(es))
	for i, e := range es {
		out[len(es)-1-i] = e
	}
	return out
}

func testAudit(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("empty", func(t *testing.T) {
		s := open(t)
		if es := mustListAudit(t, s, 0, 0); len(es) != 0 {
			t.Errorf("ListAudit on empty store = %v", es)
		}
	})

	t.Run("append and list", func(t *testing.T) {
		s := open(t)
		es := appendAudit(t, s, 5)
		for i := 1; i < len(es); i++ {
			if es[i].ID <= es[i-1].ID {
				t.Fatalf("ids not increasing: %d after %d", es[i].ID, es[i-1].ID)
			}
		}
		wantEqual(t, "ListAudit(0, 0)", mustListAudit(t, s, 0, 0), newestFirst(es))
	})

	t.Run("every field is kept", func(t *testing.T) {
		s := open(t)
		e := store.AuditEntry{
			ID:         12345, // ignored: the store assigns ids
			Time:       time.Date(2025, 3, 4, 7, 6, 7, 123456789, time.FixedZone("CEST", 2*3600)),
			Actor:      "session:4f2a",
			Role:       store.RoleViewer,
			Procedure:  "/quarry.v1.PoolService/DeletePool",
			Target:     "pool/p1 ('default')",
			Result:     "failed_precondition",
			Message:    "pool \"default\" is in use\nby images",
			RemoteAddr: "[2001:db8::1]:443",
		}
		id, err := s.AppendAudit(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		e.ID, e.Time = id, e.Time.Truncate(time.Microsecond).UTC()
		wantEqual(t, "ListAudit", mustListAudit(t, s, 0, 10), []store.AuditEntry{e})
		zero, err := s.AppendAudit(ctx, store.AuditEntry{})
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "ListAudit of a zero entry", mustListAudit(t, s, 0, 1), []store.AuditEntry{{ID: zero}})
	})

	t.Run("paging backwards by id", func(t *testing.T) {
		s := open(t)
		es := newestFirst(appendAudit(t, s, 5))
		wantEqual(t, "first page", mustListAudit(t, s, 0, 2), es[0:2])
		wantEqual(t, "second page", mustListAudit(t, s, es[1].ID, 2), es[2:4])
		wantEqual(t, "last page", mustListAudit(t, s, es[3].ID, 2), es[4:5])
		wantEqual(t, "past the oldest", mustListAudit(t, s, es[4].ID, 2), []store.AuditEntry{})
		wantEqual(t, "bound above the newest", mustListAudit(t, s, es[0].ID+1000, 10), es)
	})

	t.Run("limits", func(t *testing.T) {
		s := open(t)
		es := newestFirst(appendAudit(t, s, 1005))
		for _, tt := range []struct {
			limit, want int
		}{{0, 100}, {-1, 100}, {1, 1}, {100, 100}, {1000, 1000}, {1001, 1000}, {1 << 30, 1000}} {
			got := mustListAudit(t, s, 0, tt.limit)
			if len(got) != tt.want {
				t.Errorf("ListAudit(0, %d) returned %d entries, want %d", tt.limit, len(got), tt.want)
				continue
			}
			wantEqual(t, fmt.Sprintf("ListAudit(0, %d)", tt.limit), got, es[:tt.want])
		}
	})
}
