package storetest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

func tryLease(t *testing.T, s store.Store, req store.LeaseRequest) store.Lease {
	t.Helper()
	l, err := s.TryLease(context.Background(), req)
	if err != nil {
		t.Fatalf("TryLease(%+v): %v", req, err)
	}
	return l
}

// testLease: the first asker takes the lease at epoch 1, renews it, others
// are told who holds it; once it expires (on the database's clock) the next
// asker takes it at epoch 2, and the old holder's renewal fails.
func testLease(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	if e, err := s.LeaderEpoch(ctx); err != nil || e != 0 {
		t.Fatalf("LeaderEpoch of a new store: %d, %v; want 0", e, err)
	}
	a := tryLease(t, s, store.LeaseRequest{Holder: "a", TTL: time.Minute})
	if !a.Held || a.Epoch != 1 || a.Holder != "a" {
		t.Fatalf("first TryLease: %+v; want held at epoch 1", a)
	}
	if b := tryLease(t, s, store.LeaseRequest{Holder: "b", TTL: time.Minute}); b.Held || b.Holder != "a" || b.Epoch != 1 {
		t.Fatalf("TryLease by b while a holds it: %+v; want not held, a at epoch 1", b)
	}
	if r := tryLease(t, s, store.LeaseRequest{Holder: "a", Epoch: 1, TTL: time.Minute}); !r.Held || r.Epoch != 1 {
		t.Fatalf("renewal by a: %+v", r)
	}
	// a's lease is let go: b takes it at once, at the next epoch.
	if err := s.ReleaseLease(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	b := tryLease(t, s, store.LeaseRequest{Holder: "b", TTL: 50 * time.Millisecond})
	if !b.Held || b.Epoch != 2 {
		t.Fatalf("TryLease by b after a released: %+v; want held at epoch 2", b)
	}
	if r := tryLease(t, s, store.LeaseRequest{Holder: "a", Epoch: 1, TTL: time.Minute}); r.Held || r.Holder != "b" {
		t.Fatalf("renewal by a at the old epoch: %+v; want refused, b holds it", r)
	}
	// b does not renew: its lease expires and a takes it at epoch 3.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := tryLease(t, s, store.LeaseRequest{Holder: "a", TTL: time.Minute})
		if c.Held {
			if c.Epoch != 3 {
				t.Fatalf("takeover after expiry: %+v; want epoch 3", c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's 50 ms lease did not expire in 5 s: %+v", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if e, err := s.LeaderEpoch(ctx); err != nil || e != 3 {
		t.Fatalf("LeaderEpoch: %d, %v; want 3", e, err)
	}
	// Steal takes it whoever holds it.
	if d := tryLease(t, s, store.LeaseRequest{Holder: "d", TTL: time.Minute, Steal: true}); !d.Held || d.Epoch != 4 {
		t.Fatalf("Steal: %+v; want held at epoch 4", d)
	}
}

// testLeaseRace: replicas asking at once; exactly one holds each epoch.
func testLeaseRace(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	var held atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			l, err := s.TryLease(context.Background(), store.LeaseRequest{Holder: string(rune('a' + i)), TTL: time.Minute})
			if err != nil {
				t.Error(err)
				return
			}
			if l.Held {
				held.Add(1)
			}
		})
	}
	wg.Wait()
	if n := held.Load(); n != 1 {
		t.Fatalf("%d replicas hold the lease; want 1", n)
	}
}

// testFencedWrites: writes carrying the holder's epoch go through; once
// another replica took the lease they are refused with ErrFenced and change
// nothing, and the fence's Lost is called. Writes without a fence (API
// calls) are not affected.
func testFencedWrites(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	a := tryLease(t, s, store.LeaseRequest{Holder: "a", TTL: time.Minute})
	var lost atomic.Int32
	fenced := store.WithFence(context.Background(), store.Fence{Epoch: a.Epoch, Lost: func() { lost.Add(1) }})
	if err := s.CreatePool(fenced, pool("p1")); err != nil { // an exec
		t.Fatalf("CreatePool at the holder's epoch: %v", err)
	}
	im, j := download("j1", "im1", "p1", "src")
	if _, err := s.CreateDownload(fenced, im, j); err != nil { // a transaction
		t.Fatalf("CreateDownload at the holder's epoch: %v", err)
	}
	if err := s.ReleaseLease(context.Background(), "a", a.Epoch); err != nil {
		t.Fatal(err)
	}
	if b := tryLease(t, s, store.LeaseRequest{Holder: "b", TTL: time.Minute}); !b.Held {
		t.Fatalf("b did not take the released lease: %+v", b)
	}
	wantErr(t, "CreatePool at the old epoch", s.CreatePool(fenced, pool("p2")), store.ErrFenced, "epoch 1", "epoch 2")
	claim := j
	if _, err := s.ClaimJob(fenced, "j1", "n1", at(time.Minute)); err == nil {
		t.Fatal("ClaimJob at the old epoch succeeded")
	} else {
		wantErr(t, "ClaimJob at the old epoch", err, store.ErrFenced)
	}
	if got := mustGetJob(t, s, "j1"); got.State != claim.State || got.NodeID != "" {
		t.Fatalf("job after the refused claim: %+v", got)
	}
	if _, err := s.GetPool(context.Background(), "p2"); err == nil {
		t.Fatal("the refused CreatePool created p2")
	}
	if lost.Load() < 2 {
		t.Errorf("Lost called %d times for 2 refused writes", lost.Load())
	}
	if err := s.CreatePool(context.Background(), pool("p3")); err != nil {
		t.Fatalf("CreatePool without a fence: %v", err)
	}
}

// testLeaderRequests: a follower's request is answered once.
func testLeaderRequests(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	r := store.LeaderRequest{ID: "r1", Kind: "scan", Request: `{"pools":[]}`, Created: t0}
	if err := s.CreateLeaderRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "CreateLeaderRequest again", s.CreateLeaderRequest(ctx, r), store.ErrConflict)
	if got, err := s.GetLeaderRequest(ctx, "r1"); err != nil || got.Answered || got.Request != r.Request || !got.Created.Equal(t0) {
		t.Fatalf("GetLeaderRequest: %+v, %v", got, err)
	}
	if err := s.AnswerLeaderRequest(ctx, "r1", "done"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "AnswerLeaderRequest again", s.AnswerLeaderRequest(ctx, "r1", "twice"), store.ErrConflict)
	if got, err := s.GetLeaderRequest(ctx, "r1"); err != nil || !got.Answered || got.Response != "done" {
		t.Fatalf("GetLeaderRequest after the answer: %+v, %v", got, err)
	}
	if err := s.DeleteLeaderRequest(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLeaderRequest(ctx, "r1"); err == nil {
		t.Fatal("the deleted request is still there")
	}
	wantErr(t, "AnswerLeaderRequest of a deleted one", s.AnswerLeaderRequest(ctx, "r1", "x"), store.ErrNotFound)
}

// testSecrets: a secret is stored once; the second writer is told to read it.
func testSecrets(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.GetSecret(ctx, "ca"); err == nil {
		t.Fatal("GetSecret of a new store found one")
	} else {
		wantErr(t, "GetSecret", err, store.ErrNotFound)
	}
	v := []byte{0, 1, 2, 255, 'x'}
	if err := s.CreateSecret(ctx, "ca", v, t0); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "CreateSecret again", s.CreateSecret(ctx, "ca", []byte("other"), t0), store.ErrConflict)
	if got, err := s.GetSecret(ctx, "ca"); err != nil || string(got) != string(v) {
		t.Fatalf("GetSecret: %q, %v; want %q", got, err, v)
	}
}
