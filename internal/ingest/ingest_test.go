package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/urlpolicy"
)

const mib = 1 << 20

// pool is a pool directory in a temp dir with its os.Root.
type pool struct {
	dir  string
	root *os.Root
}

func newPool(t *testing.T, dir string) *pool {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return &pool{dir: dir, root: root}
}

// client is what the agent uses: the URL policy's client, allowing the
// test origin on loopback.
func client() *http.Client { return (&urlpolicy.Policy{AllowLoopback: true}).Client(nil) }

// request is a download of f into p with test-sized timings.
func request(p *pool, f *origintest.File) Request {
	return Request{
		Job:             "job-1",
		Fence:           1,
		URL:             f.URL(),
		Root:            p.root,
		Dest:            "images/disk.img",
		Client:          client(),
		Describe:        "pool local on node n1",
		CheckpointEvery: 50 * time.Millisecond,
		StallTimeout:    2 * time.Second,
		Backoff:         10 * time.Millisecond,
	}
}

func sha256Digest(f *origintest.File) checksum.Digest {
	return checksum.Digest{Algo: "sha256", Hex: f.SHA256()}
}

// checkImage checks that dest holds exactly f's content and that no
// partial file or checkpoint is left.
func (p *pool) checkImage(t *testing.T, dest string, f *origintest.File) {
	t.Helper()
	b, err := os.ReadFile(p.dir + "/" + dest)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != f.SHA256() {
		t.Fatalf("%s does not hold the origin's file (%d bytes)", dest, len(b))
	}
	p.checkNoPartial(t)
}

func (p *pool) checkNoPartial(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir(p.dir + "/" + poolfs.PartialDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("left in %s: %v", poolfs.PartialDir, names)
	}
}

func (p *pool) checkNoImages(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(p.dir + "/images")
	if len(entries) > 0 {
		t.Fatalf("images/ holds %v", entries[0].Name())
	}
}

func TestDownloadDigests(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/ubuntu.img", origintest.Random(5*mib+123, 1))
	for _, tt := range []struct {
		name   string
		digest func() checksum.Digest
	}{
		{"sha256", func() checksum.Digest { return sha256Digest(f) }},
		{"sha512", func() checksum.Digest { return checksum.Digest{Algo: "sha512", Hex: f.SHA512()} }},
		{"upper-case sha256", func() checksum.Digest { return checksum.Digest{Algo: "sha256", Hex: strings.ToUpper(f.SHA256())} }},
		{"none", func() checksum.Digest { return checksum.Digest{} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, "")
			r := request(p, f)
			r.Expected = tt.digest()
			var phases []string
			r.Progress = func(pr Progress) {
				if len(phases) == 0 || phases[len(phases)-1] != pr.Phase {
					phases = append(phases, pr.Phase)
				}
			}
			res, err := Download(t.Context(), r)
			if err != nil {
				t.Fatal(err)
			}
			p.checkImage(t, r.Dest, f)
			c := f.Content()
			want := Result{SHA256: f.SHA256(), Size: c.Size, Format: FormatRaw, VirtualSize: c.Size, Dest: r.Dest, FetchedBytes: c.Size}
			if r.Expected.Algo == "sha512" {
				want.SHA512 = f.SHA512()
			}
			if res != want {
				t.Fatalf("result\n%+v, want\n%+v", res, want)
			}
			if wantPhases := []string{PhasePreflight, PhaseDownloading, PhaseVerifying, PhaseFinalizing}; !slices.Equal(phases, wantPhases) {
				t.Fatalf("phases %v, want %v", phases, wantPhases)
			}
		})
	}
}

func TestDownloadFormats(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	for _, tt := range []struct {
		name    string
		content origintest.Content
		dest    string
		format  string
		virtual int64
	}{
		{"qcow2", origintest.QCOW2(2*mib, 20<<30, 2), "images/noble.qcow2", FormatQCOW2, 20 << 30},
		{"iso", origintest.ISO(2*mib, "UBUNTU", 3), "iso/noble.iso", FormatISO, 2 * mib},
		{"raw", origintest.Random(2*mib, 4), "images/disk.raw", FormatRaw, 2 * mib},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := o.Add("/"+tt.name, tt.content)
			p := newPool(t, "")
			r := request(p, f)
			r.Dest = tt.dest
			res, err := Download(t.Context(), r)
			if err != nil {
				t.Fatal(err)
			}
			if res.Format != tt.format || res.VirtualSize != tt.virtual {
				t.Fatalf("format %s, virtual size %d; want %s, %d", res.Format, res.VirtualSize, tt.format, tt.virtual)
			}
			p.checkImage(t, tt.dest, f)
		})
	}
}

func TestDestExists(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/a.img", origintest.Random(1*mib, 5))
	p := newPool(t, "")
	r := request(p, f)
	if _, err := Download(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	r.Job = "job-2"
	res, err := Download(t.Context(), r)
	if err != nil || !res.AlreadyExisted {
		t.Fatalf("same file again: %+v, %v; want AlreadyExisted", res, err)
	}
	p.checkImage(t, r.Dest, f)

	g := o.Add("/b.img", origintest.Random(1*mib, 6))
	r.Job, r.URL = "job-3", g.URL()
	_, err = Download(t.Context(), r)
	if !errors.Is(err, ErrExists) || !errors.Is(err, ErrTerminal) {
		t.Fatalf("other file to the same name: %v; want ErrExists", err)
	}
	if !strings.Contains(err.Error(), "pool local on node n1 already holds images/disk.img with other content; delete it or choose another name") {
		t.Fatalf("message %q", err)
	}
	p.checkImage(t, r.Dest, f) // untouched, and no partial file left
}

func TestRequestChecks(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/a.img", origintest.Random(1000, 5))
	p := newPool(t, "")
	for _, tt := range []struct {
		name   string
		change func(*Request)
		want   string
	}{
		{"job with slash", func(r *Request) { r.Job = "../x" }, "job id"},
		{"job with dot", func(r *Request) { r.Job = "a.ckpt" }, "job id"},
		{"dest outside", func(r *Request) { r.Dest = "../etc/passwd" }, "not a clean path inside the pool"},
		{"dest absolute", func(r *Request) { r.Dest = "/etc/passwd" }, "not a clean path inside the pool"},
		{"dest unclean", func(r *Request) { r.Dest = "images//a" }, "not a clean path inside the pool"},
		{"dest in .quarry", func(r *Request) { r.Dest = ".quarry/pool.json" }, "Quarry's own files"},
		{"bad digest", func(r *Request) { r.Expected = checksum.Digest{Algo: "md5", Hex: "00"} }, "not supported"},
		{"no client", func(r *Request) { r.Client = nil }, "no HTTP client"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := request(p, f)
			tt.change(&r)
			_, err := Download(t.Context(), r)
			if !errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v; want ErrTerminal saying %q", err, tt.want)
			}
		})
	}
	if f.Requests() != 0 {
		t.Fatalf("%d requests made for invalid downloads", f.Requests())
	}
}

// TestChunkBoundaries downloads files whose sizes fall on and around the
// sink's chunk size and the O_DIRECT alignment: full chunks go to the disk
// directly, the shorter last one through the page cache.
func TestChunkBoundaries(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	for i, n := range []int64{1, dioAlign - 1, dioAlign, dioAlign + 1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 12345, chunks*chunkSize + dioAlign} {
		f := o.Add(fmt.Sprintf("/%d.img", n), origintest.Random(n, uint64(100+i)))
		p := newPool(t, "")
		r := request(p, f)
		r.Expected = sha256Digest(f)
		res, err := Download(t.Context(), r)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if res.Size != n {
			t.Fatalf("%d bytes: result size %d", n, res.Size)
		}
		p.checkImage(t, r.Dest, f)
	}
}

// TestAnnouncedSizeNotSent: HEAD announces more than the GET then sends.
// The file was allocated for the announced size; the image must hold
// exactly what was sent.
func TestAnnouncedSizeNotSent(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("quarry"), mib/3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", strconv.Itoa(4*mib))
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	p := newPool(t, "")
	sum := sha256.Sum256(body)
	res, err := Download(t.Context(), Request{
		Job: "job-1", Fence: 1, URL: srv.URL + "/a.img", Root: p.root, Dest: "images/a.img", Client: client(),
		Expected: checksum.Digest{Algo: "sha256", Hex: hex.EncodeToString(sum[:])},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p.dir + "/images/a.img")
	if err != nil || !bytes.Equal(got, body) || res.Size != int64(len(body)) {
		t.Fatalf("image of %d bytes (%v), result size %d; want the %d bytes sent", len(got), err, res.Size, len(body))
	}
}

// TestMemoryConstant shows that a download streams: what it allocates does
// not grow with the file.
func TestMemoryConstant(t *testing.T) {
	o := origintest.New(t)
	const n = 96 * mib
	f := o.Add("/big.img", origintest.Random(n, 9))
	p := newPool(t, "")
	r := request(p, f)
	r.CheckpointEvery = time.Hour // checkpoints are not what is measured
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := Download(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// The origin in this process allocates too; the bound is still far
	// below the file's size.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > n/4 {
		t.Fatalf("downloading %d MiB allocated %d MiB", n/mib, alloc/mib)
	}
}

// BenchmarkDownload compares Download with a plain GET into a file (no
// hashing, no checkpoints) from the same origin; see the ratio metric.
func BenchmarkDownload(b *testing.B) {
	o := origintest.New(b)
	const n = 256 * mib
	f := o.Add("/big.img", origintest.Random(n, 10))
	dir := b.TempDir()
	root, _ := os.OpenRoot(dir)
	defer root.Close()
	var plain, ours time.Duration
	b.SetBytes(n)
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		resp, err := http.Get(f.URL())
		if err != nil {
			b.Fatal(err)
		}
		out, _ := os.Create(dir + "/plain")
		io.Copy(out, resp.Body)
		resp.Body.Close()
		out.Close()
		plain += time.Since(start)

		start = time.Now()
		_, err = Download(context.Background(), Request{
			Job: "bench", URL: f.URL(), Root: root, Dest: "images/x", Client: client(),
			Expected: sha256Digest(f),
		})
		if err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		root.Remove("images/x")
	}
	b.ReportMetric(float64(ours)/float64(plain), "x-plain-get")
}

// progressAt returns a Progress func that calls fn once, when at least n
// bytes are done.
func progressAt(n int64, fn func()) func(Progress) {
	var once sync.Once
	return func(pr Progress) {
		if pr.Phase == PhaseDownloading && pr.Done >= n {
			once.Do(fn)
		}
	}
}
