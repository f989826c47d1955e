package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/poolfs"
)

func TestResumeAfterDropInOneCall(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 12 * mib
	f := o.Add("/a.qcow2", origintest.QCOW2(n, 8<<30, 11))
	f.DropAt(3*mib, 3) // three resets, each 3 MiB into a response
	p := newPool(t, "")
	r := request(p, f)
	r.Expected = sha256Digest(f)
	res, err := Download(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	// Each resume starts at the last byte written: at most what was in
	// flight when the connection broke is fetched twice.
	if served := f.BytesServed(); served > n+2*mib {
		t.Fatalf("origin served %d MiB for a %d MiB file", served/mib, n/mib)
	}
	if gets := f.Requests() - 1; gets != 4 {
		t.Fatalf("%d GETs, want 4 (three resets)", gets)
	}
	if res.Resumed || res.FetchedBytes < n {
		t.Fatalf("result %+v", res)
	}
}

// interrupted runs a download of f that is cancelled once at least at
// bytes are done, as an agent shutdown would, and checks what it leaves.
func interrupted(t *testing.T, p *pool, r Request, f *origintest.File, at int64) *checkpoint {
	t.Helper()
	// Slow enough that the cancel lands before the end of the file, even
	// on a loaded machine.
	f.RateLimit(4 * mib)
	defer f.RateLimit(0)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r.Progress = progressAt(at, cancel)
	_, err := Download(ctx, r)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTerminal) {
		t.Fatalf("cancelled download: %v", err)
	}
	p.checkNoImages(t)
	ck, err := readCheckpoint(p.root, r.Job)
	if err != nil || ck == nil {
		t.Fatalf("no checkpoint after cancel: %v", err)
	}
	// The partial file may be longer (allocated ahead); the checkpointed
	// bytes must be the origin's.
	got, err := os.ReadFile(p.dir + "/" + partialPath(r.Job))
	if err != nil || ck.Offset < at || int64(len(got)) < ck.Offset {
		t.Fatalf("checkpoint at %d, partial file %d bytes, %v; want both at %d or more", ck.Offset, len(got), err, at)
	}
	want := make([]byte, ck.Offset)
	f.Content().ReadAt(want, 0)
	if !bytes.Equal(got[:ck.Offset], want) {
		t.Fatalf("the partial file's first %d bytes (the checkpoint's) are not the origin's", ck.Offset)
	}
	return ck
}

func TestResumeAcrossCalls(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		omitETag bool
	}{{"etag", false}, {"last-modified only", true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := origintest.New(t)
			const n = 16 * mib
			f := o.Add("/a.img", origintest.Random(n, 12))
			f.OmitETag(tt.omitETag)
			p := newPool(t, "")
			r := request(p, f)
			r.Expected = checksum.Digest{Algo: "sha512", Hex: f.SHA512()}
			ck := interrupted(t, p, r, f, 5*mib)
			first := f.BytesServed()

			// A crash leaves bytes past the last checkpoint that no hash
			// state covers; the next call must drop them.
			pf, err := os.OpenFile(p.dir+"/"+partialPath(r.Job), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			pf.Write(make([]byte, 300_000))
			pf.Close()

			res, err := Download(t.Context(), r)
			if err != nil {
				t.Fatal(err)
			}
			p.checkImage(t, r.Dest, f)
			if !res.Resumed || res.FetchedBytes != n-ck.Offset || res.SHA512 != f.SHA512() {
				t.Fatalf("second call: %+v; want resumed from %d", res, ck.Offset)
			}
			// In flight when cancelled: what the origin had pushed into the
			// loopback socket buffers but nobody read, a few MiB at most.
			if served := f.BytesServed(); served > n+4*mib {
				t.Fatalf("origin served %.1f MiB (%.1f in the first call) for a %d MiB file", float64(served)/mib, float64(first)/mib, n/mib)
			}
		})
	}
}

// TestCheckpointEveryBytes: with a checkpoint interval far longer than
// the download, checkpoints still come every CheckpointBytes, so a node
// lost mid-download makes the next call fetch at most that much (and the
// chunk in flight) again.
func TestCheckpointEveryBytes(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const (
		n     = 20 * mib
		every = 4 * mib
		lost  = 10 * mib
	)
	f := o.Add("/a.img", origintest.Random(n, 21))
	p := newPool(t, "")
	r := request(p, f)
	r.Expected = sha256Digest(f)
	r.CheckpointEvery, r.CheckpointBytes = time.Hour, every

	// The node is lost once lost bytes arrived: what a crash leaves is the
	// checkpoint on disk at that moment. (The cancelled call then writes a
	// last one on its way out, which a crash would not.)
	f.RateLimit(8 * mib)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		received int64
		onDisk   []byte
	)
	r.Progress = func(pr Progress) {
		if onDisk == nil && pr.Phase == PhaseDownloading && pr.Done >= lost {
			received = pr.Done
			var err error
			if onDisk, err = os.ReadFile(p.dir + "/" + checkpointPath(r.Job)); err != nil {
				t.Errorf("reading the checkpoint: %v", err)
			}
			cancel()
		}
	}
	if _, err := Download(ctx, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted download: %v", err)
	}
	f.RateLimit(0)
	var ck checkpoint
	if err := json.Unmarshal(onDisk, &ck); err != nil {
		t.Fatalf("checkpoint %q: %v", onDisk, err)
	}
	if lag := received - ck.Offset; lag < 0 || lag > every+chunkSize {
		t.Fatalf("at %.1f MiB received the checkpoint covered %.1f MiB; want at most %d MiB + one chunk behind",
			float64(received)/mib, float64(ck.Offset)/mib, every/mib)
	}
	if err := os.WriteFile(p.dir+"/"+checkpointPath(r.Job), onDisk, 0o600); err != nil {
		t.Fatal(err)
	}

	r.Progress = nil
	res, err := Download(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	if again := res.FetchedBytes - (n - received); !res.Resumed || again > every+chunkSize {
		t.Fatalf("resumed call: %+v; it fetched %.1f MiB again, want at most %d MiB + one chunk", res, float64(again)/mib, every/mib)
	}
}

// TestResumedRate: the rate a resumed download reports counts the bytes
// it transfers, not the ones it restored from its checkpoint.
func TestResumedRate(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 8 * mib
	f := o.Add("/a.img", origintest.Random(n, 21))
	p := newPool(t, "")
	r := request(p, f)
	interrupted(t, p, r, f, 6*mib)
	f.RateLimit(mib)
	var mu sync.Mutex
	peak := 0.0
	r.Progress = func(pr Progress) {
		mu.Lock()
		defer mu.Unlock()
		peak = max(peak, pr.BytesPerSec)
	}
	if res, err := Download(t.Context(), r); err != nil || !res.Resumed {
		t.Fatalf("resume: %+v, %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak > 4*mib {
		t.Fatalf("reported %.1f MiB/s from a 1 MiB/s origin: restored bytes counted as transferred", peak/mib)
	}
}

func TestChangedOriginRestartsFromZero(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		change func(o *origintest.Origin, f *origintest.File)
	}{
		{"new etag, same bytes", func(o *origintest.Origin, f *origintest.File) { f.ChangeETag() }},
		{"new etag, HEAD refused", func(o *origintest.Origin, f *origintest.File) {
			// Only If-Range on the GET can tell the file changed.
			f.ChangeETag()
			f.Status(http.StatusMethodNotAllowed, 1, 0)
		}},
		{"new file", func(o *origintest.Origin, f *origintest.File) { o.Add("/a.img", origintest.Random(10*mib, 99)) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := origintest.New(t)
			f := o.Add("/a.img", origintest.Random(8*mib, 13))
			p := newPool(t, "")
			r := request(p, f)
			interrupted(t, p, r, f, 3*mib)
			tt.change(o, f)
			res, err := Download(t.Context(), r)
			if err != nil {
				t.Fatal(err)
			}
			p.checkImage(t, r.Dest, f)
			size := f.Content().Size
			if res.Resumed || res.FetchedBytes != size || res.SHA256 != f.SHA256() {
				t.Fatalf("result %+v; want a fresh download of %d bytes", res, size)
			}
		})
	}
}

func TestOriginIgnoringRanges(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 8 * mib
	f := o.Add("/a.img", origintest.Random(n, 14))
	f.IgnoreRange(true)
	f.DropAt(4*mib, 1)
	p := newPool(t, "")
	r := request(p, f)
	r.Expected = sha256Digest(f)
	res, err := Download(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	if res.FetchedBytes != 4*mib+n {
		t.Fatalf("fetched %d bytes; want the 4 MiB before the reset and then all %d", res.FetchedBytes, n)
	}
}

func TestStallIsDetectedAndResumed(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 6 * mib
	f := o.Add("/a.img", origintest.Random(n, 15))
	f.StallAt(2*mib, time.Minute)
	p := newPool(t, "")
	r := request(p, f)
	r.StallTimeout = 300 * time.Millisecond
	r.Expected = sha256Digest(f)
	if _, err := Download(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	if gets := f.Requests() - 1; gets != 2 {
		t.Fatalf("%d GETs; want 2: the stalled one and the resume", gets)
	}
	if served := f.BytesServedOnceIdle(t); served != n {
		t.Fatalf("served %d bytes; a stall loses nothing, want %d", served, n)
	}
}

// TestResumeUnaligned resumes from a checkpoint whose offset is no
// multiple of the O_DIRECT alignment (as one written by an agent that
// wrote through the page cache leaves): the rest goes through the page
// cache, and the file is right.
func TestResumeUnaligned(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n, at = 6 * mib, 2*mib + 777
	f := o.Add("/a.img", origintest.Random(n, 19))
	p := newPool(t, "")
	r := request(p, f)
	r.Expected = sha256Digest(f)

	head := make([]byte, at)
	f.Content().ReadAt(head, 0)
	h := newHashes(false)
	h.Write(head)
	s256, _, err := h.state()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.dir+"/"+poolfs.PartialDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.dir+"/"+partialPath(r.Job), head, 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := client().Head(f.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	validator := resp.Header.Get("ETag")
	if err := writeCheckpoint(p.root, &checkpoint{Job: r.Job, URL: r.URL, Validator: validator, Total: n, Offset: at, Fence: r.Fence, SHA256: s256}); err != nil {
		t.Fatal(err)
	}

	res, err := Download(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Resumed || res.FetchedBytes != n-at {
		t.Fatalf("result %+v; want resumed, fetching the last %d bytes", res, n-at)
	}
	p.checkImage(t, r.Dest, f)
}

func TestFencing(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 8 * mib
	f := o.Add("/a.img", origintest.Random(n, 16))
	p := newPool(t, "")
	r := request(p, f)
	r.Fence = 5
	interrupted(t, p, r, f, 2*mib)
	partial, _ := os.ReadFile(p.dir + "/" + partialPath(r.Job))
	ckpt, _ := os.ReadFile(p.dir + "/" + checkpointPath(r.Job))
	requests := f.Requests()

	// A writer with a stale fence (the node the job moved away from).
	old := r
	old.Fence = 3
	_, err := Download(t.Context(), old)
	if !errors.Is(err, ErrFenced) || errors.Is(err, ErrTerminal) {
		t.Fatalf("lower fence: %v; want ErrFenced, not terminal", err)
	}
	partial2, _ := os.ReadFile(p.dir + "/" + partialPath(r.Job))
	ckpt2, _ := os.ReadFile(p.dir + "/" + checkpointPath(r.Job))
	if string(partial) != string(partial2) || string(ckpt) != string(ckpt2) || f.Requests() != requests {
		t.Fatal("the fenced writer touched the job's files or the origin")
	}

	// The new owner takes over and resumes.
	next := r
	next.Fence = 7
	res, err := Download(t.Context(), next)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Resumed || res.FetchedBytes >= n {
		t.Fatalf("takeover: %+v; want a resumed download", res)
	}
	p.checkImage(t, r.Dest, f)
}

func TestFenceLostMidway(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/a.img", origintest.Random(8*mib, 17))
	f.RateLimit(8 * mib)
	p := newPool(t, "")
	r := request(p, f)
	// Another node claims the job while this one downloads. This one's
	// checkpoints, written concurrently, may replace the other's; the
	// claim stands.
	r.Progress = progressAt(2*mib, func() {
		if err := claim(p.root, r.Job, 2); err != nil {
			t.Error(err)
		}
		if err := writeCheckpoint(p.root, &checkpoint{Job: r.Job, URL: r.URL, Fence: 2, Total: -1}); err != nil {
			t.Error(err)
		}
	})
	_, err := Download(t.Context(), r)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("error %v; want ErrFenced", err)
	}
	owner, err := ownerFence(p.root, r.Job)
	if _, serr := os.Stat(p.dir + "/" + partialPath(r.Job)); serr != nil || err != nil || owner != 2 {
		t.Fatalf("the new owner's files were touched: partial %v, owner %d (%v)", serr, owner, err)
	}
	p.checkNoImages(t)
}

// TestFenceLostToFinishedOwner: while this writer is frozen (a hung node),
// the new owner finishes the job and removes every file of it, owner file
// included. This writer must still notice at its next checkpoint that it
// lost the job, and leave nothing behind.
func TestFenceLostToFinishedOwner(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/a.img", origintest.Random(8*mib, 20))
	f.RateLimit(8 * mib)
	p := newPool(t, "")
	r := request(p, f)
	r.Progress = progressAt(2*mib, func() {
		if err := Discard(p.root, r.Job); err != nil {
			t.Error(err)
		}
	})
	downloadFencedLeavingNothing(t, p, r)
}

// TestFenceLostWhilePausedBeforeCheckpoint: this writer is frozen after
// checking that it owns the job and before writing its checkpoint, and
// the new owner finishes the job meanwhile. Woken, the writer must take
// back the checkpoint it wrote late and leave nothing behind. Not
// parallel: it sets a hook of the package.
func TestFenceLostWhilePausedBeforeCheckpoint(t *testing.T) {
	o := origintest.New(t)
	f := o.Add("/a.img", origintest.Random(8*mib, 21))
	f.RateLimit(8 * mib)
	p := newPool(t, "")
	r := request(p, f)
	var once sync.Once
	testHookCheckpoint = func() {
		once.Do(func() {
			if err := Discard(p.root, r.Job); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(func() { testHookCheckpoint = func() {} })
	downloadFencedLeavingNothing(t, p, r)
}

// downloadFencedLeavingNothing runs r, which must find that it lost the
// job and leave nothing of it in the pool.
func downloadFencedLeavingNothing(t *testing.T, p *pool, r Request) {
	t.Helper()
	_, err := Download(t.Context(), r)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("error %v; want ErrFenced", err)
	}
	if left, _ := os.ReadDir(p.dir + "/" + poolfs.PartialDir); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
	p.checkNoImages(t)
}

func TestDiscard(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/a.img", origintest.Random(4*mib, 18))
	p := newPool(t, "")
	r := request(p, f)
	interrupted(t, p, r, f, mib)
	if err := Discard(p.root, r.Job); err != nil {
		t.Fatal(err)
	}
	p.checkNoPartial(t)
	if err := Discard(p.root, r.Job); err != nil {
		t.Fatalf("second Discard: %v", err)
	}
}
