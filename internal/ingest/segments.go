package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Segmented downloads. A large file (Request.SegmentMin and up) from an
// origin that announced Accept-Ranges: bytes and a validator is cut into
// segments, fetched over up to Request.Connections connections at once,
// each with Range and If-Range. Every connection writes its bytes at their
// offsets in the one preallocated partial file, through the page cache.
// One hasher follows the contiguous prefix of the file: as soon as bytes
// past it are written, it reads them back (from the page cache, as they
// just arrived) and hashes them, so the digest is still computed in order
// while the file streams, never in a pass over the finished file.
//
// A checkpoint records every unfinished segment's progress and the hash
// state at the prefix (Offset); it is due CheckpointEvery after the last,
// or once any one segment got CheckpointBytes further, so a crash makes
// each segment fetch again at most one checkpoint interval.
//
// An origin that answers a range with the whole file (200), with another
// range, or with other validators than the first ones, ignores ranges or
// changed its file: the segments are dropped and the download starts
// again from zero over one stream.

// segment is a byte range [Start, End) of the file whose first Done bytes
// are written.
type segment struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	Done  int64 `json:"done"`

	busy     bool  // a connection is fetching it
	ckptDone int64 // Done at the last checkpoint
}

func (s *segment) complete() bool { return s.Start+s.Done >= s.End }

// plan is the state of a segmented download.
type plan struct {
	mu   sync.Mutex
	cond *sync.Cond // signalled when a segment got further or the plan stops
	segs []*segment // in file order, contiguous up to the total
	stop bool       // the hasher returns

	hmu    sync.Mutex // guards hashed with d.h: the hasher holds it while writing
	hashed int64      // d.h covers the first hashed bytes

	fetched atomic.Int64 // bytes received, for Result.FetchedBytes
	active  atomic.Int32 // connections fetching now
}

const (
	minSegment = 2 << 20
	maxSegment = 32 << 20
	// segmentWrite is how much a connection reads before it writes: small
	// enough that the hasher and the progress follow closely.
	segmentWrite = 256 << 10
)

// newPlan cuts [from, total) into segments: about eight for each
// connection, so that the segments being fetched stay close to the hashed
// prefix and little is left to hash when the last one ends, but between 2
// and 32 MiB, in whole chunks.
func newPlan(from, total int64, conns int) *plan {
	size := (total - from) / int64(conns*8)
	size = min(max(size, minSegment), maxSegment)
	size = (size + chunkSize - 1) / chunkSize * chunkSize
	p := &plan{hashed: from}
	for at := from; at < total; at += size {
		p.segs = append(p.segs, &segment{Start: at, End: min(at+size, total)})
	}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// restorePlan rebuilds a plan from a checkpoint's segments and hashed
// offset; nil if they do not describe [.., total) consistently, or claim
// bytes past the end of the partial file, of fileSize bytes.
func restorePlan(segs []segment, hashed, total, fileSize int64) *plan {
	if len(segs) == 0 || segs[len(segs)-1].End != total {
		return nil
	}
	p := &plan{hashed: hashed}
	p.cond = sync.NewCond(&p.mu)
	for i, s := range segs {
		if s.Start >= s.End || s.Done < 0 || s.Done > s.End-s.Start || (i > 0 && s.Start != segs[i-1].End) || s.Start+s.Done > fileSize {
			return nil
		}
		s.ckptDone = s.Done
		p.segs = append(p.segs, &s)
	}
	if hashed < p.segs[0].Start || hashed > p.prefixLocked() {
		return nil
	}
	return p
}

// prefixLocked is the end of the contiguous written prefix. Called with
// p.mu held (or before the plan is shared).
func (p *plan) prefixLocked() int64 {
	end := p.segs[0].Start
	for _, s := range p.segs {
		end = s.Start + s.Done
		if !s.complete() {
			break
		}
	}
	return end
}

// done counts the bytes in the partial file: everything before the first
// segment and what each segment wrote.
func (p *plan) done() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.segs[0].Start
	for _, s := range p.segs {
		n += s.Done
	}
	return n
}

// next takes the first segment nobody fetches that is not complete; nil
// when there is none.
func (p *plan) next() *segment {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.segs {
		if !s.busy && !s.complete() {
			s.busy = true
			return s
		}
	}
	return nil
}

func (p *plan) release(s *segment) {
	p.mu.Lock()
	s.busy = false
	p.mu.Unlock()
}

// from is where the rest of s starts.
func (p *plan) from(s *segment) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.Start + s.Done
}

// advance records n more bytes of s written.
func (p *plan) advance(s *segment, n int64) {
	p.mu.Lock()
	s.Done += n
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *plan) setStop(on bool) {
	p.mu.Lock()
	p.stop = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

// checkpointDue: CheckpointEvery passed, or a segment got CheckpointBytes
// further since the last checkpoint.
func (d *download) checkpointDue() bool {
	if time.Since(d.lastCkpt) >= d.r.CheckpointEvery {
		return true
	}
	p := d.plan
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.segs {
		if s.Done-s.ckptDone >= d.r.CheckpointBytes {
			return true
		}
	}
	return false
}

// planSnapshot describes the partial file for a checkpoint: the hash
// state at the hashed prefix first, then the segments, which only grow,
// so they cover at least what the hash state covers. The caller makes the
// file durable after taking it (persist).
func (d *download) planSnapshot() (*checkpoint, error) {
	p := d.plan
	p.hmu.Lock()
	hashed := p.hashed
	ck, err := d.snapshot(hashed)
	p.hmu.Unlock()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	for _, s := range p.segs {
		if s.End > hashed {
			ck.Segments = append(ck.Segments, segment{Start: s.Start, End: s.End, Done: s.Done})
		}
		s.ckptDone = s.Done
	}
	p.mu.Unlock()
	return ck, nil
}

// segmentable says whether the rest of the download can go in segments.
func (d *download) segmentable() bool {
	return d.r.Connections > 1 && !d.upload && !d.oneStream && d.ranges &&
		d.validator != "" && d.total >= d.r.SegmentMin
}

// maybeSegment cuts what is left of the file into segments when it can.
func (d *download) maybeSegment() {
	if d.plan != nil || !d.segmentable() || d.offset() >= d.total {
		return
	}
	d.plan = newPlan(d.offset(), d.total, d.r.Connections)
	d.notice(fmt.Sprintf("downloading in %d segments over up to %d connections", len(d.plan.segs), d.r.Connections))
}

func (d *download) notice(msg string) {
	if d.r.OnNotice != nil {
		d.r.OnNotice(msg)
	}
}

// oneStreamError says the origin cannot serve segments: it ignored a
// range, answered another one, or its validators changed.
type oneStreamError struct{ reason string }

func (e *oneStreamError) Error() string { return e.reason }

// fallBack drops the segments and starts again from zero over one stream.
func (d *download) fallBack(why *oneStreamError) error {
	d.notice(why.reason + "; downloading again from the start over one stream")
	d.plan, d.oneStream = nil, true
	return d.restart()
}

// fetchSegments fetches every segment left, up to Connections at once,
// while the hasher follows. nil: the whole file is written and hashed.
func (d *download) fetchSegments(ctx context.Context) error {
	p := d.plan
	d.s.setDirect(false) // writes at any offset and length; reads by the hasher
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.setStop(false)

	var first error
	var once sync.Once
	fail := func(err error) {
		once.Do(func() { first = err })
		cancel(err)
		p.setStop(true)
	}
	var workers, hasher sync.WaitGroup
	for range d.r.Connections {
		workers.Go(func() {
			if err := d.segmentWorker(sctx, ctx); err != nil {
				fail(err)
			}
		})
	}
	hasher.Go(func() {
		if err := d.hashPrefix(); err != nil {
			fail(err)
		}
	})
	workersDone := make(chan struct{})
	go func() {
		workers.Wait()
		close(workersDone)
	}()

	d.meter.phase(PhaseDownloading, p.done(), d.total)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for running := true; running; {
		select {
		case <-workersDone:
			running = false
		case <-t.C:
		}
		// A change in the connections fetching is reported at once.
		conns := int(p.active.Load())
		changed := conns != d.meter.conns
		d.meter.conns = conns
		d.meter.update(p.done(), d.total, changed)
		if running && d.checkpointDue() && sctx.Err() == nil {
			if err := d.checkpoint(); err != nil {
				fail(err)
			}
		}
	}
	if first == nil {
		// Every segment is written: the hasher catches up and returns.
		p.mu.Lock()
		p.stop = true
		p.mu.Unlock()
		p.cond.Broadcast()
	}
	hasher.Wait()
	d.meter.conns = 0
	d.fetched += p.fetched.Swap(0)
	if first != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return first
	}
	p.hmu.Lock()
	hashed := p.hashed
	p.hmu.Unlock()
	if hashed != d.total {
		return fmt.Errorf("hashing job %s stopped at %s of %s", d.r.Job, size(hashed), size(d.total))
	}
	return nil
}

// hashPrefix hashes the file in order as its contiguous prefix grows,
// reading back what the connections wrote, until the plan stops; after a
// stop it still hashes whatever prefix is written.
func (d *download) hashPrefix() error {
	p := d.plan
	buf := make([]byte, chunkSize)
	for {
		p.mu.Lock()
		end := p.prefixLocked()
		for end <= p.hashed && !p.stop {
			p.cond.Wait()
			end = p.prefixLocked()
		}
		stop := p.stop
		p.mu.Unlock()
		// p.hashed changes only here: reading it without hmu is safe.
		for p.hashed < end {
			n := min(end-p.hashed, int64(len(buf)))
			if _, err := d.f.ReadAt(buf[:n], p.hashed); err != nil {
				return d.localError("reading back the partial file", err)
			}
			p.hmu.Lock()
			d.h.Write(buf[:n])
			p.hashed += n
			p.hmu.Unlock()
		}
		if stop {
			return nil
		}
	}
}

// segmentWorker fetches segments one after the other until none is left.
// ctx is the whole call's: cancelling it is the caller's stop, not an
// error of the attempt.
func (d *download) segmentWorker(sctx, ctx context.Context) error {
	p := d.plan
	buf := make([]byte, segmentWrite)
	for {
		s := p.next()
		if s == nil {
			return nil
		}
		err := d.fetchSegment(sctx, ctx, s, buf)
		p.release(s)
		if err != nil {
			return err
		}
	}
}

// fetchSegment fetches the rest of s. An attempt that got further and then
// failed is retried after a short backoff; one that did not ends the
// segmented attempt with its error, which the call's retry loop counts.
func (d *download) fetchSegment(sctx, ctx context.Context, s *segment, buf []byte) error {
	for {
		progressed, err := d.segmentAttempt(sctx, ctx, s, buf)
		if err == nil || sctx.Err() != nil {
			return err
		}
		te, ok := errors.AsType[*transientError](err)
		if !ok || !progressed {
			return err
		}
		if d.r.OnFailure != nil {
			d.r.OnFailure(Failure{Err: err, Progressed: true, RetryAfter: te.retryAfter})
		}
		if err := d.backoff(sctx, 1, te.retryAfter); err != nil {
			return err
		}
	}
}

// segmentAttempt makes one range request for the rest of s and writes its
// body at its offsets.
func (d *download) segmentAttempt(sctx, ctx context.Context, s *segment, buf []byte) (progressed bool, err error) {
	p := d.plan
	from := p.from(s)
	actx, cancel := context.WithCancelCause(sctx)
	defer cancel(nil)
	var arrived atomic.Int64
	defer watchArrivals(actx, cancel, &arrived, d.r.StallTimeout)()

	req, err := d.newRequest(actx, http.MethodGet)
	if err != nil {
		return false, err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-"+strconv.FormatInt(s.End-1, 10))
	req.Header.Set("If-Range", d.validator)
	resp, err := d.r.Client.Do(req)
	if err != nil {
		return false, d.classifySegment(ctx, actx, err, from)
	}
	defer resp.Body.Close()
	if err := d.acceptSegment(resp, from); err != nil {
		return false, err
	}
	p.active.Add(1)
	defer p.active.Add(-1)

	// buf[:n] holds bytes of the body not yet written, which start at
	// from: written whenever buf is full, and before any return. What was
	// in it when the process died is fetched again after the restart.
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		if _, err := d.f.WriteAt(buf[:n], from); err != nil {
			return d.writeError(err, from, d.total)
		}
		p.advance(s, int64(n))
		from += int64(n)
		n, progressed = 0, true
		return nil
	}
	for {
		left := s.End - from - int64(n)
		if left == 0 {
			// One more read sees the end of the body, so that the
			// connection goes back to the pool for the next segment
			// instead of being closed (a new TCP and TLS handshake).
			err := flush()
			resp.Body.Read(buf[:1])
			return progressed, err
		}
		space := d.limited(buf[n:])
		space = space[:min(int64(len(space)), left)]
		m, rerr := resp.Body.Read(space)
		if m > 0 {
			n += m
			arrived.Add(int64(m))
			p.fetched.Add(int64(m))
			if err := d.throttle(actx, m); err != nil && rerr == nil {
				rerr = err
			}
		}
		if n == len(buf) || rerr != nil {
			if err := flush(); err != nil {
				return progressed, err
			}
		}
		switch {
		case rerr == io.EOF && s.End-from > 0:
			return progressed, &transientError{msg: fmt.Sprintf("the origin ended a range at %s, %s before its end", size(from), size(s.End-from))}
		case rerr == io.EOF:
			return progressed, nil
		case rerr != nil:
			return progressed, d.classifySegment(ctx, actx, rerr, from)
		}
	}
}

// classifySegment is classify for one connection, whose position is its
// own.
func (d *download) classifySegment(ctx, actx context.Context, err error, at int64) error {
	if ctx.Err() == nil && errors.Is(context.Cause(actx), errStall) {
		return &transientError{msg: fmt.Sprintf("no data from the origin for %s (fewer than 64 KiB) at %s", d.r.StallTimeout, size(at)), cause: errStall}
	}
	err = d.classify(ctx, actx, err)
	if te, ok := errors.AsType[*transientError](err); ok {
		te.msg = fmt.Sprintf("fetching %s at %s: %v", d.r.URL, size(at), te.cause)
	}
	return err
}

// acceptSegment checks the answer to a range request for [from, ..).
func (d *download) acceptSegment(resp *http.Response, from int64) error {
	code := resp.StatusCode
	switch {
	case code == http.StatusPartialContent:
		start, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != from || (total >= 0 && total != d.total) {
			return &oneStreamError{reason: fmt.Sprintf("the origin answered a range request for byte %d with %q", from, resp.Header.Get("Content-Range"))}
		}
		if v := validator(resp.Header); v != "" && v != d.validator {
			return &oneStreamError{reason: fmt.Sprintf("the origin's file changed during the download (validator %s, then %s)", d.validator, v)}
		}
		return nil
	case code == http.StatusOK:
		if v := validator(resp.Header); v != d.validator {
			return &oneStreamError{reason: fmt.Sprintf("the origin's file changed during the download (validator %s, then %s)", d.validator, v)}
		}
		return &oneStreamError{reason: "the origin ignored a range request and sent the whole file"}
	case code == http.StatusRequestedRangeNotSatisfiable:
		return &oneStreamError{reason: fmt.Sprintf("the origin refused the range from byte %d (%s)", from, resp.Status)}
	}
	return d.statusError(resp)
}
