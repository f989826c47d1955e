package ingest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/origintest"
)

// segmented is request with segments on for files of 4 MiB and up.
func segmented(p *pool, f *origintest.File) Request {
	r := request(p, f)
	r.Connections, r.SegmentMin = 4, 4*mib
	r.Expected = sha256Digest(f)
	return r
}

// notices collects what a download says about how it goes on.
type notices struct {
	mu   sync.Mutex
	msgs []string
}

func (n *notices) add(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.msgs = append(n.msgs, s)
}

func (n *notices) find(t *testing.T, sub string) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if strings.Contains(m, sub) {
			return
		}
	}
	t.Fatalf("no notice says %q: %q", sub, n.msgs)
}

func TestSegmentedDownload(t *testing.T) {
	t.Parallel()
	for _, algo := range []string{"sha256", "sha512"} {
		t.Run(algo, func(t *testing.T) {
			t.Parallel()
			o := origintest.New(t)
			const n = 24*mib + 12345 // segments of 2 MiB, the last one short
			f := o.Add("/a.qcow2", origintest.QCOW2(n, 8<<30, 21))
			f.RateLimit(16 * mib) // each connection: slow enough that they overlap
			p := newPool(t, "")
			r := segmented(p, f)
			if algo == "sha512" {
				r.Expected = checksum.Digest{Algo: "sha512", Hex: f.SHA512()}
			}
			var most atomic.Int32
			r.Progress = func(pr Progress) {
				if c := int32(pr.Connections); c > most.Load() {
					most.Store(c)
				}
			}
			var ns notices
			r.OnNotice = ns.add
			res, err := Download(t.Context(), r)
			if err != nil {
				t.Fatal(err)
			}
			p.checkImage(t, r.Dest, f)
			ns.find(t, "over up to 4 connections")
			if res.FetchedBytes != n || res.Size != n || res.SHA256 != f.SHA256() || res.Format != FormatQCOW2 {
				t.Fatalf("result %+v; want %d bytes fetched once, qcow2", res, int64(n))
			}
			if algo == "sha512" && res.SHA512 != f.SHA512() {
				t.Fatalf("sha512 %s; want %s", res.SHA512, f.SHA512())
			}
			if most.Load() < 2 {
				t.Fatalf("at most %d connections were reported at once; want several", most.Load())
			}
			// One HEAD, then one GET for each of the 13 segments.
			if got := f.Requests(); got != 14 {
				t.Fatalf("%d requests; want 14", got)
			}
		})
	}
}

func TestSegmentedSmallFileIsOneStream(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/a.img", origintest.Random(3*mib, 22))
	p := newPool(t, "")
	r := segmented(p, f)
	if _, err := Download(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	if got := f.Requests(); got != 2 {
		t.Fatalf("%d requests; want a HEAD and one GET", got)
	}
}

func TestSegmentConnectionDropped(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 16 * mib
	f := o.Add("/a.img", origintest.Random(n, 23))
	f.RateLimit(8 * mib)
	f.DropAt(mib+4321, 1) // one connection, in the middle of its segment
	p := newPool(t, "")
	r := segmented(p, f)
	var fails []Failure
	var mu sync.Mutex
	r.OnFailure = func(fl Failure) {
		mu.Lock()
		fails = append(fails, fl)
		mu.Unlock()
	}
	res, err := Download(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	if len(fails) != 1 || !fails[0].Progressed {
		t.Fatalf("failures %+v; want the one dropped connection, after progress", fails)
	}
	// The bytes that arrived before the drop are kept: nothing is fetched
	// twice, and the segment goes on from where it broke.
	if served := f.BytesServedOnceIdle(t); served != n || res.FetchedBytes != n {
		t.Fatalf("origin served %d bytes, the download fetched %d; want %d", served, res.FetchedBytes, int64(n))
	}
}

func TestSegmentsOriginIgnoresRangeForSecondConnection(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 16 * mib
	f := o.Add("/a.img", origintest.Random(n, 24))
	f.RateLimit(16 * mib)
	f.IgnoreRangeAfter(1)
	p := newPool(t, "")
	r := segmented(p, f)
	var ns notices
	r.OnNotice = ns.add
	res, err := Download(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	ns.find(t, "ignored a range request")
	ns.find(t, "from the start over one stream")
	if res.SHA256 != f.SHA256() || res.Size != n {
		t.Fatalf("result %+v", res)
	}
}

func TestSegmentsETagChangesMidway(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 32 * mib // 16 segments: most are requested after the change
	f := o.Add("/a.img", origintest.Random(n, 25))
	f.RateLimit(4 * mib)
	p := newPool(t, "")
	r := segmented(p, f)
	var ns notices
	r.OnNotice = ns.add
	r.Progress = progressAt(4*mib, f.ChangeETag)
	res, err := Download(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	ns.find(t, "changed during the download")
	// After the change, the whole file came once more over one stream.
	if res.FetchedBytes < n+4*mib {
		t.Fatalf("fetched %d bytes; want the %d MiB before the change and then all of it", res.FetchedBytes, n/mib)
	}
}

func TestSegmentedResumeAcrossCalls(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 24 * mib
	f := o.Add("/a.img", origintest.Random(n, 26))
	p := newPool(t, "")
	r := segmented(p, f)
	// Stop the first call once the connections got going, as a shutdown
	// would; the checkpoint holds every segment's progress.
	f.RateLimit(4 * mib)
	ctx, cancel := context.WithCancel(t.Context())
	r.Progress = progressAt(10*mib, cancel)
	if _, err := Download(ctx, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled download: %v", err)
	}
	f.RateLimit(0)
	ck, err := readCheckpoint(p.root, r.Job)
	if err != nil || ck == nil {
		t.Fatalf("no checkpoint: %v", err)
	}
	started := 0
	durable := ck.Segments[0].Start
	for _, s := range ck.Segments {
		durable += s.Done
		if s.Done > 0 {
			started++
		}
	}
	if started < 2 || durable < 10*mib || ck.Offset > durable {
		t.Fatalf("checkpoint at %d with segments %+v; want several segments with progress and 10 MiB durable", ck.Offset, ck.Segments)
	}
	r.Progress = nil
	served := f.BytesServed()
	res, err := Download(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	// Every segment went on from its checkpointed progress. (The origin's
	// count may take in a last chunk of a response of the first call,
	// cancelled as it was written: 32 KiB for each connection.)
	if more := f.BytesServed() - served; !res.Resumed || res.FetchedBytes != n-durable || more < n-durable || more > n-durable+4*32<<10 {
		t.Fatalf("result %+v, origin served %d more; want a resume fetching the %d bytes not durable", res, f.BytesServed()-served, n-durable)
	}
}

func TestSegmentedResumeWithOneConnection(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 16 * mib
	f := o.Add("/a.img", origintest.Random(n, 27))
	p := newPool(t, "")
	r := segmented(p, f)
	f.RateLimit(4 * mib)
	ctx, cancel := context.WithCancel(t.Context())
	r.Progress = progressAt(6*mib, cancel)
	if _, err := Download(ctx, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled download: %v", err)
	}
	f.RateLimit(0)
	ck, _ := readCheckpoint(p.root, r.Job)
	if ck == nil || len(ck.Segments) == 0 {
		t.Fatalf("checkpoint %+v; want segments", ck)
	}
	// An agent configured for one connection goes on from the hashed prefix.
	r.Progress, r.Connections = nil, 1
	res, err := Download(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)
	if !res.Resumed || res.FetchedBytes != n-ck.Offset {
		t.Fatalf("result %+v; want a resume from %d", res, ck.Offset)
	}
}

func TestSegmentedWrongBytesFailAfterOneFreshAttempt(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 12 * mib
	f := o.Add("/a.img", origintest.Random(n, 28))
	f.WrongBytes(7*mib + 3)
	p := newPool(t, "")
	r := segmented(p, f)
	var ns notices
	r.OnNotice = ns.add
	_, err := Download(t.Context(), r)
	if !errors.Is(err, ErrChecksum) || !errors.Is(err, ErrTerminal) {
		t.Fatalf("error %v; want ErrChecksum", err)
	}
	// Both attempts went in segments; each fetched the file once.
	if served := f.BytesServedOnceIdle(t); served != 2*n {
		t.Fatalf("served %d bytes; want the file twice (%d)", served, 2*n)
	}
	ns.find(t, "segments")
	p.checkNoImages(t)
	p.checkNoPartial(t)
}

func TestRestorePlan(t *testing.T) {
	seg := func(start, end, done int64) segment { return segment{Start: start, End: end, Done: done} }
	for _, tt := range []struct {
		name   string
		segs   []segment
		hashed int64
		size   int64 // of the partial file
		ok     bool
	}{
		{"consistent", []segment{seg(10, 20, 10), seg(20, 30, 4)}, 15, 30, true},
		{"hashed inside the second", []segment{seg(10, 20, 10), seg(20, 30, 4)}, 24, 30, true},
		{"hashed past the prefix", []segment{seg(10, 20, 10), seg(20, 30, 4)}, 25, 30, false},
		{"hashed before the first", []segment{seg(10, 20, 10), seg(20, 30, 4)}, 5, 30, false},
		{"gap", []segment{seg(10, 20, 10), seg(21, 30, 4)}, 15, 30, false},
		{"not to the end", []segment{seg(10, 20, 10), seg(20, 29, 4)}, 15, 30, false},
		{"done past the end of a segment", []segment{seg(10, 20, 11), seg(20, 30, 4)}, 15, 30, false},
		{"past the end of the file", []segment{seg(10, 20, 10), seg(20, 30, 4)}, 15, 22, false},
		{"empty segment", []segment{seg(10, 10, 0), seg(10, 30, 4)}, 10, 30, false},
		{"none", nil, 0, 30, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if p := restorePlan(tt.segs, tt.hashed, 30, tt.size); (p != nil) != tt.ok {
				t.Fatalf("restorePlan = %v; want ok %v", p, tt.ok)
			}
		})
	}
}
