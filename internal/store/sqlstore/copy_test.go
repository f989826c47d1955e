package sqlstore

import (
	"context"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/pgtest"
)

// TestCopyTablesCoverSchema: copyTables names every table the migrations
// make, so a new one cannot be left behind by CopyTo.
func TestCopyTablesCoverSchema(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "quarry.db"))
	defer s.Close()
	rows, err := s.db.Query(`SELECT name FROM sqlite_master WHERE type = 'table'
		AND name NOT IN ('schema_migrations', 'sqlite_sequence') ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	want := slices.Sorted(slices.Values(slices.Concat(copyTables, notCopied)))
	if !slices.Equal(tables, want) {
		t.Errorf("schema tables %v, copyTables %v", tables, want)
	}
}

// TestCopySQLiteToPostgres copies a store with every kind of record from
// SQLite into PostgreSQL: what the target returns is what the source did,
// ids keep growing, and a non-empty target is refused.
func TestCopySQLiteToPostgres(t *testing.T) {
	ctx := context.Background()
	src := openSQLite(t, filepath.Join(t.TempDir(), "quarry.db"))
	defer src.Close()
	fill(t, src)
	dst := openPostgres(t, pgtest.NewDatabase(t))

	counts, err := src.CopyTo(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range counts {
		if c.Rows == 0 {
			t.Errorf("table %s copied no rows; the fixture should fill every table", c.Table)
		}
	}
	if len(counts) != len(copyTables) {
		t.Errorf("counts %v, want one per table", counts)
	}
	for _, view := range views {
		got, err := view.read(ctx, dst)
		if err != nil {
			t.Fatalf("%s on the target: %v", view.name, err)
		}
		want, err := view.read(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s on the target:\n got %+v\nwant %+v", view.name, got, want)
		}
	}
	es, _ := src.ListAudit(ctx, 0, 1)
	if id, err := dst.AppendAudit(ctx, store.AuditEntry{Actor: "after"}); err != nil || id <= es[0].ID {
		t.Errorf("AppendAudit on the target = %d, %v; want an id above %d", id, err, es[0].ID)
	}
	if err := dst.AppendJobEvent(ctx, store.JobEvent{JobID: "j1", Message: "after"}); err != nil {
		t.Errorf("AppendJobEvent on the target: %v", err)
	}
	if _, err := src.CopyTo(ctx, dst); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("copy into a non-empty target: %v, want a refusal", err)
	}
}

// views read everything a store holds through its interface.
var views = []struct {
	name string
	read func(context.Context, *Store) (any, error)
}{
	{"ListNodes", func(ctx context.Context, s *Store) (any, error) { return s.ListNodes(ctx) }},
	{"ListPools", func(ctx context.Context, s *Store) (any, error) { return s.ListPools(ctx) }},
	{"ListPoolMounts", func(ctx context.Context, s *Store) (any, error) { return s.ListPoolMounts(ctx) }},
	{"ListTokens", func(ctx context.Context, s *Store) (any, error) { return s.ListTokens(ctx) }},
	{"GetSession", func(ctx context.Context, s *Store) (any, error) { return s.GetSession(ctx, "s1") }},
	{"ListAudit", func(ctx context.Context, s *Store) (any, error) { return s.ListAudit(ctx, 0, 100) }},
	{"ListImages", func(ctx context.Context, s *Store) (any, error) { return s.ListImages(ctx, store.ImageFilter{}) }},
	{"ListJobs", func(ctx context.Context, s *Store) (any, error) { return s.ListJobs(ctx, store.JobFilter{}) }},
	{"ListJobEvents", func(ctx context.Context, s *Store) (any, error) { return s.ListJobEvents(ctx, "j1") }},
	{"ListCatalogRefresh", func(ctx context.Context, s *Store) (any, error) { return s.ListCatalogRefresh(ctx) }},
	{"ListCatalogBuilds", func(ctx context.Context, s *Store) (any, error) { return s.ListCatalogBuilds(ctx, "e1", "p1") }},
}

// fill writes at least one row into every table.
func fill(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	at := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.CreateNode(ctx, store.Node{ID: "n1", Name: "kvm1", Address: "10.0.0.1:9090", State: store.NodeUnknown, CreatedAt: at}))
	must(s.SetNodeCertificate(ctx, "n1", store.NodeCertificate{Serial: "0a", KeyHash: "ff", NotAfter: at.Add(time.Hour), IssuedAt: at}))
	must(s.CreatePool(ctx, store.Pool{ID: "p1", Name: "isos", Type: "dir", Path: "/srv/isos", Shared: true,
		AssignedNodeIDs: []string{"n1"}, CreatedAt: at}))
	must(s.RecordNodeCheck(ctx, "n1", store.NodeStatus{State: store.NodeReady, LastCheckedAt: at, Hostname: "kvm1"},
		[]store.PoolMount{{NodeID: "n1", PoolID: "p1", Mounted: true, FreeBytes: 1 << 40, TotalBytes: 1 << 41, CheckedAt: at}}))
	must(s.CreateToken(ctx, store.Token{ID: "t1", Name: "ci", Kind: store.TokenAPI, Role: store.RoleAdmin,
		SecretHash: []byte{1, 2}, CreatedAt: at, ExpiresAt: at.Add(time.Hour)}))
	must(s.CreateSession(ctx, store.Session{ID: "s1", TokenID: "t1", CSRF: "c", CreatedAt: at, ExpiresAt: at.Add(time.Hour)}))
	must(s.CreateSecret(ctx, "ca", []byte("sealed"), at))
	for range 3 {
		_, err := s.AppendAudit(ctx, store.AuditEntry{Time: at, Actor: "token:t1", Role: store.RoleAdmin, Procedure: "/p", Result: "ok"})
		must(err)
	}
	must(s.CreateImage(ctx, store.Image{ID: "im1", PoolID: "p1", Name: "a.iso", Kind: store.KindISO, State: store.ImageReady,
		RelPath: "iso/a.iso", SizeBytes: 5, Bootable: true, Verified: true, CreatedAt: at}))
	_, err := s.CreateDownload(ctx, store.Image{ID: "im2", PoolID: "p1", RelPath: "images/b.qcow2", CreatedAt: at},
		store.Job{ID: "j1", Source: "https://example.com/b.qcow2", CreatedAt: at})
	must(err)
	j, err := s.ClaimJob(ctx, "j1", "n1", at.Add(time.Minute))
	must(err)
	j.BytesPerSec, j.BytesDone, j.CancelRequested = 1234.5, 1<<33, true
	must(s.UpdateJob(ctx, j))
	for i := range 2 {
		must(s.AppendJobEvent(ctx, store.JobEvent{JobID: "j1", Time: at.Add(time.Duration(i) * time.Second), Message: "e"}))
	}
	must(s.PutCatalogRefresh(ctx, store.CatalogRefresh{CatalogID: "e1", PoolID: "p1", CurrentImageID: "im1",
		LastCheckAt: at, NextCheckAt: at.Add(time.Hour), Result: "unchanged", Error: "x", JobID: "j1"}))
	must(s.PutCatalogBuild(ctx, store.CatalogBuild{ImageID: "im1", CatalogID: "e1", PoolID: "p1", Build: "b",
		BuiltAt: at, ETag: `"e"`, LastModified: "lm", Digest: "sha256:aa", CreatedAt: at}))
}
