package sqlstore

// Every backend keeps what it stored across a close and a reopen: each test
// here takes open, which opens the same database every time it is called.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

func testReopenKeepsState(t *testing.T, open func(t *testing.T) *Store) {
	ctx := context.Background()
	created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	node := store.Node{ID: "n1", Name: "kvm1", Address: "10.0.0.1:9090", State: store.NodeUnknown, CreatedAt: created}
	pool := store.Pool{ID: "p1", Name: "default", Type: "dir", Path: "/srv/pool", Shared: true,
		AssignedNodeIDs: []string{"n1"}, CreatedAt: created}
	mount := store.PoolMount{NodeID: "n1", PoolID: "p1", Mounted: true, FreeBytes: 1, TotalBytes: 2, CheckedAt: created}

	s := open(t)
	if err := s.CreateNode(ctx, node); err != nil {
		t.Fatal(err)
	}
	if err := s.CreatePool(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPoolInitialized(ctx, "p1", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordNodeCheck(ctx, "n1", store.NodeStatus{State: store.NodeReady, LastCheckedAt: created}, []store.PoolMount{mount}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t)
	defer s.Close()
	gotNode, err := s.GetNode(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if gotNode.State != store.NodeReady || !gotNode.CreatedAt.Equal(created) || !gotNode.LastCheckedAt.Equal(created) {
		t.Errorf("node after reopen = %+v", gotNode)
	}
	gotPool, err := s.GetPool(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if gotPool.InitializedBy != "n1" || !gotPool.Shared || len(gotPool.AssignedNodeIDs) != 1 {
		t.Errorf("pool after reopen = %+v", gotPool)
	}
	ms, err := s.ListPoolMounts(ctx)
	if err != nil || len(ms) != 1 || ms[0] != mount {
		t.Errorf("mounts after reopen = %+v, %v", ms, err)
	}
	// The foreign keys must hold on the reopened database too: they are a
	// per-connection pragma in SQLite, not part of the schema.
	if err := s.DeleteNode(ctx, "n1"); !errors.Is(err, store.ErrInUse) {
		t.Errorf("DeleteNode of assigned node after reopen: %v, want ErrInUse", err)
	}
}

func testReopenKeepsTrustState(t *testing.T, open func(t *testing.T) *Store) {
	ctx := context.Background()
	created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	cert := store.NodeCertificate{Serial: "0a1b2c", NotAfter: created.Add(90 * 24 * time.Hour), IssuedAt: created}
	tok := store.Token{ID: "t1", Name: "ci", Kind: store.TokenAPI, Role: store.RoleAdmin,
		SecretHash: []byte{0x00, 0xff, 0x10}, CreatedAt: created, ExpiresAt: created.Add(time.Hour)}
	join := store.Token{ID: "j1", Kind: store.TokenJoin, SecretHash: []byte{1}, CreatedAt: created, SingleUse: true}
	sess := store.Session{ID: "s1", TokenID: "t1", CSRF: "c", CreatedAt: created, ExpiresAt: created.Add(time.Hour)}
	entry := store.AuditEntry{Time: created, Actor: "token:t1", Role: store.RoleAdmin, Procedure: "/p", Target: "node/n1", Result: "ok"}

	s := open(t)
	if err := s.CreateNode(ctx, store.Node{ID: "n1", Name: "kvm1", Address: "10.0.0.1:9090", CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetNodeCertificate(ctx, "n1", cert); err != nil {
		t.Fatal(err)
	}
	for _, tk := range []store.Token{tok, join} {
		if err := s.CreateToken(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UseToken(ctx, "j1", created); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for range 3 {
		id, err := s.AppendAudit(ctx, entry)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t)
	defer s.Close()
	if n, err := s.GetNode(ctx, "n1"); err != nil || n.Certificate != cert {
		t.Errorf("node certificate after reopen = %+v, %v; want %+v", n.Certificate, err, cert)
	}
	if got, err := s.GetToken(ctx, "t1"); err != nil || got.Name != "ci" || string(got.SecretHash) != string(tok.SecretHash) ||
		!got.ExpiresAt.Equal(tok.ExpiresAt) || got.Role != store.RoleAdmin {
		t.Errorf("token after reopen = %+v, %v", got, err)
	}
	// A single-use token used before the restart stays used.
	if _, err := s.UseToken(ctx, "j1", created); !errors.Is(err, store.ErrConflict) {
		t.Errorf("UseToken of a used single-use token after reopen: %v, want ErrConflict", err)
	}
	if got, err := s.GetSession(ctx, "s1"); err != nil || got != sess {
		t.Errorf("session after reopen = %+v, %v; want %+v", got, err, sess)
	}
	es, err := s.ListAudit(ctx, 0, 10)
	if err != nil || len(es) != 3 || es[0].ID != ids[2] || es[2].ID != ids[0] {
		t.Errorf("audit after reopen = %+v, %v; want ids %v newest first", es, err, ids)
	}
	// Ids keep growing across restarts.
	if id, err := s.AppendAudit(ctx, entry); err != nil || id <= ids[2] {
		t.Errorf("AppendAudit after reopen = %d, %v; want an id above %d", id, err, ids[2])
	}
	// The sessions foreign key holds on the reopened database too.
	if err := s.CreateSession(ctx, store.Session{ID: "s2", TokenID: "tx"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateSession for an unknown token after reopen: %v, want ErrNotFound", err)
	}
	if err := s.RevokeToken(ctx, "t1", created); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSession after RevokeToken: %v, want ErrNotFound", err)
	}
}

func testReopenKeepsImages(t *testing.T, open func(t *testing.T) *Store) {
	ctx := context.Background()
	created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	iso := store.Image{ID: "im1", PoolID: "p1", Name: "Ubuntu 24.04", Kind: store.KindISO, Format: "iso",
		State: store.ImageReady, RelPath: "iso/ubuntu.iso", SizeBytes: 6 << 30, ModTime: created.Add(-time.Hour),
		VolumeLabel: "Ubuntu 24.04 LTS amd64", Bootable: true, OSDistro: "ubuntu", OSVersion: "24.04", OSArch: "x86_64",
		SHA256: "abc123", Origin: store.OriginDiscovered, CreatedAt: created, UpdatedAt: created}
	disk := store.Image{ID: "im2", PoolID: "p1", Name: "disk", Kind: store.KindDisk, Format: "qcow2",
		State: store.ImageReady, RelPath: "disk/a.qcow2", Origin: store.OriginUploaded, CreatedAt: created}

	s := open(t)
	if err := s.CreatePool(ctx, store.Pool{ID: "p1", Name: "isos", Type: "dir", Path: "/srv/isos", CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateImage(ctx, iso); err != nil {
		t.Fatal(err)
	}
	gone := iso
	gone.State, gone.StateReason, gone.MissingSince = store.ImageMissing, "not found by scan", created.Add(time.Minute)
	skipped, err := s.ApplyScan(ctx, "p1", store.ScanChanges{
		Create: []store.Image{disk},
		Update: []store.ImageUpdate{{Image: gone, ExpectState: store.ImageReady}},
	})
	if err != nil || skipped != 0 {
		t.Fatalf("ApplyScan = %d, %v", skipped, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t)
	defer s.Close()
	ims, err := s.ListImages(ctx, store.ImageFilter{PoolID: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ims) != 2 || ims[0] != disk || ims[1] != gone {
		t.Errorf("images after reopen = %+v\nwant %+v", ims, []store.Image{disk, gone})
	}
	// The unique path and the pool's foreign key hold on the reopened
	// database too.
	if err := s.CreateImage(ctx, store.Image{ID: "im3", PoolID: "p1", RelPath: "iso/ubuntu.iso"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateImage at a taken path after reopen: %v, want ErrConflict", err)
	}
	if err := s.DeletePool(ctx, "p1"); !errors.Is(err, store.ErrInUse) || !strings.Contains(err.Error(), "2 image(s)") {
		t.Errorf("DeletePool of a pool with images after reopen: %v, want ErrInUse naming 2 images", err)
	}
	// Below the store's own check, the schema refuses too.
	if _, err := s.db.ExecContext(ctx, `DELETE FROM pools WHERE id = 'p1'`); err == nil || !s.isForeignKey(err) {
		t.Errorf("raw DELETE of a pool with images: %v, want a foreign-key violation", err)
	}
}

func testReopenKeepsJobs(t *testing.T, open func(t *testing.T) *Store) {
	ctx := context.Background()
	created := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	const src = "catalog:ubuntu-24.04"
	im1 := store.Image{ID: "im1", PoolID: "p1", Name: "Ubuntu 24.04", Kind: store.KindISO, RelPath: "iso/ubuntu.iso",
		Origin: store.OriginDownloaded, CreatedAt: created}
	j1 := store.Job{ID: "j1", Source: src, URL: "https://releases.example/ubuntu.iso",
		Checksum: "sha256:00ff", ChecksumURL: "https://releases.example/SHA256SUMS", CreatedAt: created}
	im2 := store.Image{ID: "im2", PoolID: "p1", RelPath: "iso/debian.iso", CreatedAt: created}
	j2 := store.Job{ID: "j2", Source: "catalog:debian-13", CreatedAt: created.Add(time.Second)}

	s := open(t)
	if err := s.CreatePool(ctx, store.Pool{ID: "p1", Name: "isos", Type: "dir", Path: "/srv/isos", CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		im store.Image
		j  store.Job
	}{{im1, j1}, {im2, j2}} {
		if _, err := s.CreateDownload(ctx, d.im, d.j); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ClaimJob(ctx, "j1", "n1", created.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	running, err := s.ClaimJob(ctx, "j1", "n2", created.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	running.Phase, running.BytesDone, running.BytesTotal, running.BytesPerSec = "downloading", 1<<30, 6<<30, 123456.75
	running.Attempts, running.Message, running.CancelRequested = 2, "downloading from mirror 2", true
	if err := s.UpdateJob(ctx, running); err != nil {
		t.Fatal(err)
	}
	var events []store.JobEvent
	for i := range 3 {
		e := store.JobEvent{JobID: "j1", Time: created.Add(time.Duration(3-i) * time.Second), Message: fmt.Sprintf("event %d", i)}
		if err := s.AppendJobEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	done, err := s.GetJob(ctx, "j2")
	if err != nil {
		t.Fatal(err)
	}
	done.State, done.FinishedAt = store.JobFailed, created.Add(time.Hour)
	im2.State, im2.StateReason = store.ImageError, "checksum mismatch"
	if err := s.FinishJob(ctx, done, im2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t)
	defer s.Close()
	if got, err := s.GetJob(ctx, "j1"); err != nil || got != running {
		t.Errorf("job after reopen = %+v, %v\nwant %+v", got, err, running)
	}
	if got, err := s.GetJob(ctx, "j2"); err != nil || got != done {
		t.Errorf("finished job after reopen = %+v, %v\nwant %+v", got, err, done)
	}
	if got, err := s.ListJobEvents(ctx, "j1"); err != nil || len(got) != 3 || got[0] != events[0] || got[2] != events[2] {
		t.Errorf("events after reopen = %+v, %v; want %+v", got, err, events)
	}
	// The fence keeps growing from where it was.
	if got, err := s.ClaimJob(ctx, "j1", "n1", created.Add(3*time.Minute)); err != nil || got.Fence != 3 {
		t.Errorf("ClaimJob after reopen = fence %d, %v; want 3", got.Fence, err)
	}
	running.Message = "stale owner"
	if err := s.UpdateJob(ctx, running); !errors.Is(err, store.ErrConflict) {
		t.Errorf("UpdateJob with fence 2 after reopen: %v, want ErrConflict", err)
	}
	// One active job per (source, pool) holds on the reopened database, in the
	// store and, below it, in the schema; finished jobs do not count.
	if got, err := s.CreateDownload(ctx, store.Image{ID: "im3", PoolID: "p1", RelPath: "iso/again.iso"},
		store.Job{ID: "j3", Source: src}); !errors.Is(err, store.ErrConflict) || got.ID != "j1" {
		t.Errorf("CreateDownload of a running source after reopen = %s, %v; want j1 and ErrConflict", got.ID, err)
	}
	if _, err := s.db.ExecContext(ctx, s.d.Q(`INSERT INTO jobs (id, pool_id, source, state) VALUES ('jx', 'p1', ?, 'QUEUED')`), src); err == nil || !s.isUnique(err) {
		t.Errorf("raw INSERT of a second active job: %v, want a unique violation", err)
	}
	if _, err := s.db.ExecContext(ctx, s.d.Q(`INSERT INTO jobs (id, pool_id, source, state) VALUES ('jy', 'p1', ?, 'FAILED')`), src); err != nil {
		t.Errorf("raw INSERT of a second, failed job: %v", err)
	}
	if err := s.DeletePool(ctx, "p1"); !errors.Is(err, store.ErrInUse) || !strings.Contains(err.Error(), "1 download running") {
		t.Errorf("DeletePool with an active job after reopen: %v, want ErrInUse naming 1 download", err)
	}

	// With only finished jobs and no images left, the jobs' foreign key
	// alone still refuses a raw delete of the pool; DeletePool takes the
	// jobs and, by cascade, their events with it.
	running, err = s.GetJob(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	running.State = store.JobCancelled
	if err := s.UpdateJob(ctx, running); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"im1", "im2"} {
		if err := s.DeleteImage(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM pools WHERE id = 'p1'`); err == nil || !s.isForeignKey(err) {
		t.Errorf("raw DELETE of a pool with jobs: %v, want a foreign-key violation", err)
	}
	if err := s.DeletePool(ctx, "p1"); err != nil {
		t.Fatalf("DeletePool with finished jobs only: %v", err)
	}
	var jobs, evs int
	if err := s.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM job_events)`).Scan(&jobs, &evs); err != nil {
		t.Fatal(err)
	}
	if jobs != 0 || evs != 0 {
		t.Errorf("%d jobs and %d events left after DeletePool, want none", jobs, evs)
	}
}
