// Package origintest is an HTTP origin for tests of image downloads: an
// httptest server on 127.0.0.1 that serves generated images of any size
// without holding them in memory, and misbehaves on command the way real
// mirrors do: it resets connections, stalls, ignores ranges, changes
// validators, serves wrong bytes, answers errors and throttles.
//
// The contract:
//
//   - Each path serves one Content with strong ETag and Last-Modified
//     validators, Accept-Ranges: bytes and Content-Length. GET and HEAD are
//     answered; a single range (bytes=N- or bytes=N-M) gets 206, an unknown
//     range form gets the whole body (as RFC 9110 allows), a range past the
//     end 416. If-Range with the current ETag or Last-Modified keeps the
//     range; any other value gets 200 and the whole body.
//   - Faults are set per path at any time and apply to the requests that
//     start afterwards. Byte positions for DropAt and StallAt count the body
//     of one response; WrongBytes counts the file.
//   - A GET or HEAD with If-None-Match matching the ETag (or, without it,
//     If-Modified-Since not before Last-Modified) gets 304 Not Modified.
//   - Redirect answers a path with 302 to another path or URL.
//   - Counters (Requests, BytesServed) count what was answered, faults
//     included, so tests can assert how much a client fetched again.
//
// Origins are cleaned up with the test.
package origintest

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Origin is the server. Its methods are safe for concurrent use.
type Origin struct {
	srv  *httptest.Server
	stop chan struct{} // closed at cleanup: releases stalled and throttled handlers

	mu        sync.Mutex
	answered  *sync.Cond // on mu: a response ended
	files     map[string]*File
	redirects map[string]string
	gen       int // source of fresh validators
}

// New starts an origin on 127.0.0.1 that stops when t ends.
func New(t testing.TB) *Origin {
	o := &Origin{stop: make(chan struct{}), files: map[string]*File{}, redirects: map[string]string{}}
	o.answered = sync.NewCond(&o.mu)
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(func() {
		close(o.stop)
		o.srv.Close()
	})
	return o
}

// URL returns the URL of path, which need not have been added (for 404s).
func (o *Origin) URL(path string) string { return o.srv.URL + path }

// Add serves content at path and returns its handle. Adding to a path
// again replaces the content and gives it new validators; faults and
// counters stay.
func (o *Origin) Add(path string, c Content) *File {
	if !strings.HasPrefix(path, "/") {
		panic("origintest: path must start with /: " + path)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	f := o.files[path]
	if f == nil {
		f = &File{o: o, path: path, faults: faults{wrongAt: -1, rangesLeft: -1}}
		o.files[path] = f
	}
	f.content = c
	f.version++
	f.sums = nil
	o.newValidatorLocked(f)
	return f
}

// AddChecksumFile serves a SHA256SUMS-style file at path: one
// "<hex>  <name>" line per entry (name → hex digest), sorted by name.
func (o *Origin) AddChecksumFile(path string, entries map[string]string) *File {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		fmt.Fprintf(&b, "%s  %s\n", entries[name], name)
	}
	return o.Add(path, Bytes([]byte(b.String())))
}

// Redirect answers requests for path with 302 Found to target, a URL or
// another path of this origin.
func (o *Origin) Redirect(path, target string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.redirects[path] = target
}

// File returns the handle of an added path, or nil.
func (o *Origin) File(path string) *File {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.files[path]
}

func (o *Origin) newValidatorLocked(f *File) {
	o.gen++
	f.etag = fmt.Sprintf(`"q%x-%d"`, f.content.Seed, o.gen)
	// Whole seconds apart: Last-Modified has a resolution of one second.
	f.modTime = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(o.gen) * time.Hour)
}

// File is one served path: its content, validators, faults and counters.
type File struct {
	o    *Origin
	path string

	// guarded by o.mu
	content  Content
	version  int // counts Adds: sums are valid for one version
	etag     string
	modTime  time.Time
	sums     map[string]string
	faults   faults
	requests int
	active   int // responses being written
	served   int64
	// notModified counts 304 answers to conditional requests.
	notModified int
}

type faults struct {
	dropAt      int64
	dropTimes   int
	stallAt     int64
	stallFor    time.Duration // 0: no stall pending
	ignoreRange bool
	rangesLeft  int // range requests still honoured; -1: all
	omitETag    bool
	hideLength  bool
	wrongAt     int64 // -1: none
	status      int
	statusTimes int
	retryAfter  time.Duration
	rate        int64 // bytes per second, 0: unlimited
}

func (f *File) locked(fn func()) {
	f.o.mu.Lock()
	defer f.o.mu.Unlock()
	fn()
}

// URL is where the file is served.
func (f *File) URL() string { return f.o.URL(f.path) }

// Content returns what the file serves (before WrongBytes).
func (f *File) Content() (c Content) {
	f.locked(func() { c = f.content })
	return c
}

// SHA256 is the hex SHA-256 of the content (not of wrong bytes served).
func (f *File) SHA256() string { return f.sum("sha256") }

// SHA512 is the hex SHA-512 of the content.
func (f *File) SHA512() string { return f.sum("sha512") }

func (f *File) sum(algo string) string {
	var c Content
	var version int
	s, ok := "", false
	f.locked(func() { c, version, s, ok = f.content, f.version, f.sums[algo], f.sums[algo] != "" })
	if ok {
		return s
	}
	if algo == "sha256" {
		s = hex.EncodeToString(c.sum(sha256.New()))
	} else {
		s = hex.EncodeToString(c.sum(sha512.New()))
	}
	f.locked(func() {
		if f.version != version {
			return // replaced meanwhile
		}
		if f.sums == nil {
			f.sums = map[string]string{}
		}
		f.sums[algo] = s
	})
	return s
}

// Requests counts every request for the path, HEAD and failed ones included.
func (f *File) Requests() (n int) {
	f.locked(func() { n = f.requests })
	return n
}

// NotModified counts the requests answered 304 Not Modified: conditional
// requests (If-None-Match, If-Modified-Since) whose validators were current.
func (f *File) NotModified() (n int) {
	f.locked(func() { n = f.notModified })
	return n
}

// Idle waits until no response for the path is being written, for up to
// timeout, and reports whether none is. A client that has read a whole
// body can get there before the origin has counted the last bytes it wrote.
func (f *File) Idle(timeout time.Duration) bool {
	wake := time.AfterFunc(timeout, func() { f.locked(f.o.answered.Broadcast) })
	defer wake.Stop()
	deadline := time.Now().Add(timeout)
	f.o.mu.Lock()
	defer f.o.mu.Unlock()
	for f.active > 0 && time.Now().Before(deadline) {
		f.o.answered.Wait()
	}
	return f.active == 0
}

// BytesServedOnceIdle is BytesServed once no response for the path is
// being written (Idle); t fails if one still is after 10 s.
func (f *File) BytesServedOnceIdle(t testing.TB) int64 {
	t.Helper()
	if !f.Idle(10 * time.Second) {
		t.Fatalf("%s: a response is still being written after 10 s", f.path)
	}
	return f.BytesServed()
}

// BytesServed counts body bytes written for the path.
func (f *File) BytesServed() (n int64) {
	f.locked(func() { n = f.served })
	return n
}

// DropAt makes the next times responses close the connection after n bytes
// of their body, without finishing it (the client sees an unexpected EOF).
func (f *File) DropAt(n int64, times int) {
	f.locked(func() { f.faults.dropAt, f.faults.dropTimes = n, times })
}

// StallAt makes the next response stop sending for d after n bytes of its
// body (or until the client gives up), then go on.
func (f *File) StallAt(n int64, d time.Duration) {
	f.locked(func() { f.faults.stallAt, f.faults.stallFor = n, d })
}

// IgnoreRange makes the origin answer every request with 200 and the whole
// body while still advertising Accept-Ranges, as some mirrors do.
func (f *File) IgnoreRange(on bool) { f.locked(func() { f.faults.ignoreRange = on }) }

// IgnoreRangeAfter makes the origin honour the next n range requests and
// answer every later one with 200 and the whole body, as a mirror does
// whose second connection lands on a server that ignores ranges. n < 0
// honours them all again.
func (f *File) IgnoreRangeAfter(n int) { f.locked(func() { f.faults.rangesLeft = n }) }

// OmitETag leaves ETag out, so Last-Modified is the only validator.
func (f *File) OmitETag(on bool) { f.locked(func() { f.faults.omitETag = on }) }

// HideLength leaves out Content-Length (the body is chunked) and the total
// in Content-Range, so the client cannot know the size in advance.
func (f *File) HideLength(on bool) { f.locked(func() { f.faults.hideLength = on }) }

// ChangeETag gives the file new validators, its content unchanged (use Add
// to change the content too).
func (f *File) ChangeETag() { f.locked(func() { f.o.newValidatorLocked(f) }) }

// WrongBytes flips the byte at file offset at in everything served from
// now on, so the body no longer matches SHA256; at < 0 stops it.
func (f *File) WrongBytes(at int64) { f.locked(func() { f.faults.wrongAt = at }) }

// Status answers the next times requests with code and no body; a
// positive retryAfter is sent as Retry-After (whole seconds, at least 1).
func (f *File) Status(code, times int, retryAfter time.Duration) {
	f.locked(func() { f.faults.status, f.faults.statusTimes, f.faults.retryAfter = code, times, retryAfter })
}

// RateLimit throttles bodies to about bytesPerSec; 0 lifts the limit, also
// for responses already being sent.
func (f *File) RateLimit(bytesPerSec int64) { f.locked(func() { f.faults.rate = bytesPerSec }) }

// Clear removes every fault.
func (f *File) Clear() { f.locked(func() { f.faults = faults{wrongAt: -1, rangesLeft: -1} }) }
