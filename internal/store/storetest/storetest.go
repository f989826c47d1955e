// Package storetest is the conformance suite for store.Store.
//
// Every implementation runs the same Run, so the SQLite and PostgreSQL
// stores cannot come to disagree on behaviour callers depend on: error
// classes, ordering, what an update keeps, what a delete takes with it. The
// suite uses only the store.Store interface and ids of its own making, and
// it opens a new store for every subtest.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// Run runs the suite. open must return a new, empty, migrated store for t and
// close it when t ends (t.Cleanup); it is called once per subtest.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("Nodes", func(t *testing.T) { testNodes(t, open) })
	t.Run("NodeChecks", func(t *testing.T) { testNodeChecks(t, open) })
	t.Run("Pools", func(t *testing.T) { testPools(t, open) })
	t.Run("UpdatePool", func(t *testing.T) { testUpdatePool(t, open) })
	t.Run("MarkPoolInitialized", func(t *testing.T) { testMarkPoolInitialized(t, open) })
	t.Run("Deletes", func(t *testing.T) { testDeletes(t, open) })
	t.Run("Images", func(t *testing.T) { testImages(t, open) })
	t.Run("UpdateImage", func(t *testing.T) { testUpdateImage(t, open) })
	t.Run("ApplyScan", func(t *testing.T) { testApplyScan(t, open) })
	t.Run("PoolWithImages", func(t *testing.T) { testPoolWithImages(t, open) })
	t.Run("NodeCertificates", func(t *testing.T) { testNodeCertificates(t, open) })
	t.Run("Tokens", func(t *testing.T) { testTokens(t, open) })
	t.Run("UseToken", func(t *testing.T) { testUseToken(t, open) })
	t.Run("Enroll", func(t *testing.T) { testEnroll(t, open) })
	t.Run("Sessions", func(t *testing.T) { testSessions(t, open) })
	t.Run("Audit", func(t *testing.T) { testAudit(t, open) })
	t.Run("Concurrency", func(t *testing.T) { testConcurrency(t, open) })
	t.Run("TokenConcurrency", func(t *testing.T) { testTokenConcurrency(t, open) })
	t.Run("AuditConcurrency", func(t *testing.T) { testAuditConcurrency(t, open) })
	t.Run("ImageConcurrency", func(t *testing.T) { testImageConcurrency(t, open) })
	t.Run("Jobs", func(t *testing.T) { testJobs(t, open) })
	t.Run("CreateJob", func(t *testing.T) { testCreateJob(t, open) })
	t.Run("Uploads", func(t *testing.T) { testUploads(t, open) })
	t.Run("JobFencing", func(t *testing.T) { testJobFencing(t, open) })
	t.Run("FinishJob", func(t *testing.T) { testFinishJob(t, open) })
	t.Run("JobEvents", func(t *testing.T) { testJobEvents(t, open) })
	t.Run("CountRunningJobs", func(t *testing.T) { testCountRunningJobs(t, open) })
	t.Run("PoolWithJobs", func(t *testing.T) { testPoolWithJobs(t, open) })
	t.Run("JobConcurrency", func(t *testing.T) { testJobConcurrency(t, open) })
	t.Run("Context", func(t *testing.T) { testContext(t, open) })
	t.Run("Lease", func(t *testing.T) { testLease(t, open) })
	t.Run("LeaseRace", func(t *testing.T) { testLeaseRace(t, open) })
	t.Run("FencedWrites", func(t *testing.T) { testFencedWrites(t, open) })
	t.Run("LeaderRequests", func(t *testing.T) { testLeaderRequests(t, open) })
	t.Run("Secrets", func(t *testing.T) { testSecrets(t, open) })
	t.Run("CatalogRefresh", func(t *testing.T) { testCatalogRefresh(t, open) })
	t.Run("Paging", func(t *testing.T) { testPaging(t, open) })
	t.Run("PagingConcurrentInserts", func(t *testing.T) { testPagingConcurrentInserts(t, open) })
}

// t0 is microsecond-aligned because stores keep microseconds.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func node(id string) store.Node {
	return store.Node{
		ID:        id,
		Name:      "node-" + id,
		Address:   "10.0.0." + id[1:] + ":9090",
		State:     store.NodeUnknown,
		CreatedAt: t0,
	}
}

func pool(id string, nodes ...string) store.Pool {
	return store.Pool{
		ID:              id,
		Name:            "pool-" + id,
		Type:            "dir",
		Path:            "/var/lib/quarry/" + id,
		AssignedNodeIDs: nodes,
		CreatedAt:       t0,
	}
}

func mustCreateNodes(t *testing.T, s store.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := s.CreateNode(context.Background(), node(id)); err != nil {
			t.Fatalf("CreateNode(%s): %v", id, err)
		}
	}
}

func mustCreatePool(t *testing.T, s store.Store, p store.Pool) {
	t.Helper()
	if err := s.CreatePool(context.Background(), p); err != nil {
		t.Fatalf("CreatePool(%s): %v", p.ID, err)
	}
}

func mustGetNode(t *testing.T, s store.Store, id string) store.Node {
	t.Helper()
	n, err := s.GetNode(context.Background(), id)
	if err != nil {
		t.Fatalf("GetNode(%s): %v", id, err)
	}
	return n
}

func mustGetPool(t *testing.T, s store.Store, id string) store.Pool {
	t.Helper()
	p, err := s.GetPool(context.Background(), id)
	if err != nil {
		t.Fatalf("GetPool(%s): %v", id, err)
	}
	return p
}

func mustMounts(t *testing.T, s store.Store) []store.PoolMount {
	t.Helper()
	ms, err := s.ListPoolMounts(context.Background())
	if err != nil {
		t.Fatalf("ListPoolMounts: %v", err)
	}
	return ms
}

// wantErr fails unless err is of class want and its message contains every
// detail, so errors keep naming what went wrong.
func wantErr(t *testing.T, op string, err, want error, details ...string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", op, err, want)
	}
	for _, d := range details {
		if !strings.Contains(err.Error(), d) {
			t.Errorf("%s: error %q does not mention %q", op, err, d)
		}
	}
}

// equal compares with time.Time.Equal semantics and treats nil and empty
// slices alike, which is all callers can rely on; it also insists times
// come back in UTC.
func equal(got, want any) bool {
	return reflect.DeepEqual(normalize(got), normalize(want))
}

// normalize maps records to views whose times are strings, so DeepEqual
// sees instants and locations rather than time.Time internals.
func normalize(v any) any {
	switch x := v.(type) {
	case store.Node:
		ts := [5]string{utc(x.StateSince), utc(x.LastCheckedAt), utc(x.CreatedAt),
			utc(x.Certificate.NotAfter), utc(x.Certificate.IssuedAt)}
		x.StateSince, x.LastCheckedAt, x.CreatedAt = time.Time{}, time.Time{}, time.Time{}
		x.Certificate.NotAfter, x.Certificate.IssuedAt = time.Time{}, time.Time{}
		return struct {
			store.Node
			StateSince, LastCheckedAt, CreatedAt, CertNotAfter, CertIssuedAt string
		}{x, ts[0], ts[1], ts[2], ts[3], ts[4]}
	case store.NodeCertificate:
		ts := [2]string{utc(x.NotAfter), utc(x.IssuedAt)}
		x.NotAfter, x.IssuedAt = time.Time{}, time.Time{}
		return struct {
			store.NodeCertificate
			NotAfter, IssuedAt string
		}{x, ts[0], ts[1]}
	case store.Token:
		if len(x.SecretHash) == 0 {
			x.SecretHash = nil
		}
		ts := [4]string{utc(x.CreatedAt), utc(x.ExpiresAt), utc(x.RevokedAt), utc(x.LastUsedAt)}
		x.CreatedAt, x.ExpiresAt, x.RevokedAt, x.LastUsedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		return struct {
			store.Token
			CreatedAt, ExpiresAt, RevokedAt, LastUsedAt string
		}{x, ts[0], ts[1], ts[2], ts[3]}
	case store.Session:
		ts := [2]string{utc(x.CreatedAt), utc(x.ExpiresAt)}
		x.CreatedAt, x.ExpiresAt = time.Time{}, time.Time{}
		return struct {
			store.Session
			CreatedAt, ExpiresAt string
		}{x, ts[0], ts[1]}
	case store.AuditEntry:
		ts := utc(x.Time)
		x.Time = time.Time{}
		return struct {
			store.AuditEntry
			Time string
		}{x, ts}
	case store.Pool:
		if len(x.AssignedNodeIDs) == 0 {
			x.AssignedNodeIDs = nil
		}
		created := utc(x.CreatedAt)
		x.CreatedAt = time.Time{}
		return struct {
			store.Pool
			CreatedAt string
		}{x, created}
	case store.Image:
		ts := [4]string{utc(x.ModTime), utc(x.CreatedAt), utc(x.UpdatedAt), utc(x.MissingSince)}
		x.ModTime, x.CreatedAt, x.UpdatedAt, x.MissingSince = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		return struct {
			store.Image
			ModTime, CreatedAt, UpdatedAt, MissingSince string
		}{x, ts[0], ts[1], ts[2], ts[3]}
	case store.Job:
		ts := [4]string{utc(x.CreatedAt), utc(x.UpdatedAt), utc(x.StartedAt), utc(x.FinishedAt)}
		x.CreatedAt, x.UpdatedAt, x.StartedAt, x.FinishedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		return struct {
			store.Job
			CreatedAt, UpdatedAt, StartedAt, FinishedAt string
		}{x, ts[0], ts[1], ts[2], ts[3]}
	case store.JobEvent:
		ts := utc(x.Time)
		x.Time = time.Time{}
		return struct {
			store.JobEvent
			Time string
		}{x, ts}
	case store.PoolMount:
		checked := utc(x.CheckedAt)
		x.CheckedAt = time.Time{}
		return struct {
			store.PoolMount
			CheckedAt string
		}{x, checked}
	case []store.Node:
		return normalizeAll(x)
	case []store.Pool:
		return normalizeAll(x)
	case []store.PoolMount:
		return normalizeAll(x)
	case []store.Image:
		return normalizeAll(x)
	case []store.Token:
		return normalizeAll(x)
	case []store.AuditEntry:
		return normalizeAll(x)
	case []store.Job:
		return normalizeAll(x)
	case []store.JobEvent:
		return normalizeAll(x)
	}
	return v
}

func normalizeAll[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i := range xs {
		out[i] = normalize(xs[i])
	}
	return out
}

// utc keeps zero as zero and marks non-UTC times so they never compare equal.
func utc(t time.Time) string {
	if t.IsZero() {
		return "zero"
	}
	if t.Location() != time.UTC {
		return "not UTC: " + t.String()
	}
	return t.Format(time.RFC3339Nano)
}

func wantEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !equal(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, show(got), show(want))
	}
}

func show(v any) string { return fmt.Sprintf("%+v", v) }
