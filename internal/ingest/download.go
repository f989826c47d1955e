package ingest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"sync/atomic"
	"time"

	"github.com/quarry-project/quarry/internal/atomicfile"
	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// maxRetryAfter bounds how long a Retry-After can hold the job inside one
// call; an origin asking for longer is retried after this.
const maxRetryAfter = 5 * time.Minute

// download is the state of one Download call, or of one open Upload
// (upload.go), which writes, hashes, checkpoints and finishes the same way. The invariant: the first
// s.base bytes of the partial file are written or on their way there (in
// the sink), h covers exactly them, and the sink's pending chunk holds
// the next bytes, not yet hashed.
type download struct {
	r         Request
	f         *os.File
	s         *sink
	h         *hashes
	total     int64  // -1: unknown
	validator string // If-Range value; "": this origin cannot be resumed safely
	resumed   bool
	fetched   int64
	fresh     bool      // the one download from zero after a mismatch has begun
	lastCkpt  time.Time // when the last checkpoint was taken
	ckptAt    int64     // and the offset it covers
	meter     *meter
	arrived   atomic.Int64 // bytes received, read by the stall watchdog
	sha256    string
	sha512    string
	// upload: the bytes come from a client (Upload), not from r.URL.
	upload bool
	// onDurable is told the offset of every checkpoint written (uploads).
	onDurable func(int64)
	// noCheckpoints holds checkpoints back until the end of an atomic
	// upload write, which may have to be dropped whole.
	noCheckpoints bool
	// plan is set while the download goes in segments (segments.go).
	plan *plan
	// ranges: the origin announced Accept-Ranges: bytes. oneStream: it
	// failed a segmented download, which is not tried again in this call.
	ranges, oneStream bool
}

// offset counts the bytes received and kept: where the next range starts.
func (d *download) offset() int64 {
	if d.plan != nil {
		return d.plan.done()
	}
	if d.s == nil {
		return 0
	}
	return d.s.end()
}

func (d *download) run(ctx context.Context) (Result, error) {
	r := &d.r
	d.meter.phase(PhasePreflight, 0, -1)
	ck, err := readCheckpoint(r.Root, r.Job)
	if err != nil {
		return Result{}, fmt.Errorf("reading the checkpoint of job %s in %s: %w", r.Job, r.Describe, err)
	}
	if err := checkFence(r.Root, r.Job, r.Fence); err != nil {
		return Result{}, err
	}
	info, err := d.preflight(ctx)
	if err != nil {
		return Result{}, d.stopped(ctx, err)
	}
	if err := r.Root.MkdirAll(poolfs.PartialDir, 0o755); err != nil {
		return Result{}, d.localError("creating "+poolfs.PartialDir, err)
	}
	if d.f, err = r.Root.OpenFile(partialPath(r.Job), os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return Result{}, d.localError("opening the partial file", err)
	}
	if d.s, err = newSink(d.f, d.persist); err != nil {
		return Result{}, d.localError("allocating buffers", err)
	}
	if err := d.start(ck, info); err != nil {
		return Result{}, err
	}
	if err := d.ensureSpace(); err != nil {
		return Result{}, err
	}

	highWater, fails := d.offset(), 0
	for {
		var err error
		if d.plan != nil {
			err = d.fetchSegments(ctx)
			if ose, ok := errors.AsType[*oneStreamError](err); ok && ctx.Err() == nil {
				if err := d.fallBack(ose); err != nil {
					return Result{}, err
				}
				highWater, fails = 0, 0
				continue
			}
		} else {
			err = d.attempt(ctx)
		}
		if err == nil && d.total >= 0 && d.offset() != d.total {
			err = &transientError{msg: fmt.Sprintf("the origin ended the body at %s of %s", size(d.offset()), size(d.total))}
		}
		if err == nil {
			err = d.flush()
		}
		if err == nil {
			err := d.verify()
			if err == nil {
				return d.finish()
			}
			if !errors.Is(err, ErrChecksum) || d.fresh {
				return Result{}, err
			}
			// Once more from zero: the bytes may have been damaged on the
			// way, or the origin changed the file under one validator.
			d.fresh = true
			if err := d.restart(); err != nil {
				return Result{}, err
			}
			d.maybeSegment()
			highWater, fails = 0, 0
			continue
		}
		if ctx.Err() != nil {
			return Result{}, d.stopped(ctx, err)
		}
		var te *transientError
		if !errors.As(err, &te) {
			return Result{}, err
		}
		// Failures count in a row without progress: a long download over a
		// flaky link goes on as long as each attempt gets further.
		progressed := d.offset() > highWater
		if progressed {
			highWater, fails = d.offset(), 0
		} else {
			fails++
		}
		if r.OnFailure != nil {
			r.OnFailure(Failure{Err: err, Progressed: progressed, RetryAfter: te.retryAfter})
		}
		if fails >= r.MaxAttempts {
			d.checkpoint() // best effort: the next call resumes from here
			return Result{}, fmt.Errorf("download of %s failed %d times in a row (last: %w); it resumes from %s when retried", r.URL, fails, err, size(d.offset()))
		}
		if err := d.backoff(ctx, max(fails, 1), te.retryAfter); err != nil {
			return Result{}, d.stopped(ctx, err)
		}
	}
}

// start resumes from ck when it still describes the origin's file, and
// otherwise starts from zero; either way it claims the job with this
// writer's fence before any byte is written.
func (d *download) start(ck *checkpoint, info preflight) error {
	r := &d.r
	if err := claim(r.Root, r.Job, r.Fence); err != nil {
		return d.localError("claiming the job", err)
	}
	d.validator, d.total, d.ranges = info.validator, info.total, info.ranges
	if ck != nil && d.resumable(ck, info) {
		h, err := restoreHashes(ck.SHA256, ck.SHA512, r.Expected.Algo == checksum.SHA512)
		st, serr := d.f.Stat()
		if err == nil && serr == nil && len(ck.Segments) > 0 && info.total == ck.Total && st.Size() >= ck.Offset {
			d.validator, d.total = ck.Validator, ck.Total
			if p := restorePlan(ck.Segments, ck.Offset, ck.Total, st.Size()); p != nil && d.segmentable() {
				// Each segment goes on from its own checkpointed progress.
				d.h, d.resumed, d.fresh, d.plan = h, true, ck.Fresh, p
				d.s.reset(ck.Offset)
				d.meter.rebase(p.done())
				d.notice(fmt.Sprintf("resuming %d segments over up to %d connections", len(p.segs), r.Connections))
				return d.checkpoint()
			}
			// Otherwise on from the hashed prefix, over one stream or in
			// new segments.
		}
		if err == nil && serr == nil && st.Size() >= ck.Offset {
			// Bytes past the checkpoint were never made durable with a hash
			// state to match; they go.
			if err := d.f.Truncate(ck.Offset); err != nil {
				return d.localError("truncating the partial file", err)
			}
			d.h, d.validator, d.total, d.resumed = h, ck.Validator, ck.Total, ck.Offset > 0
			d.fresh = ck.Fresh
			d.s.reset(ck.Offset)
			d.meter.rebase(ck.Offset)
			if info.total >= 0 {
				d.total = info.total
			}
			d.maybeSegment()
			return d.checkpoint()
		}
	}
	if err := d.restart(); err != nil {
		return err
	}
	d.maybeSegment()
	if d.plan != nil {
		return d.checkpoint()
	}
	return nil
}

func (d *download) resumable(ck *checkpoint, info preflight) bool {
	switch {
	case ck.URL != d.r.URL || ck.Validator == "" || ck.Offset < 0:
		return false
	case !info.known:
		return true // the GET's If-Range decides
	case info.noRanges, info.validator != ck.Validator:
		return false
	case info.total >= 0 && ck.Total >= 0 && info.total != ck.Total:
		return false
	}
	return true
}

// restart empties the partial file and begins again from zero. The
// checkpoint is replaced before new bytes are written, so a crash cannot
// pair old hash states with new bytes.
func (d *download) restart() error {
	if err := d.drain(); err != nil { // nothing may land after the truncation
		return err
	}
	d.plan = nil
	if err := d.f.Truncate(0); err != nil {
		return d.localError("truncating the partial file", err)
	}
	d.h = newHashes(d.r.Expected.Algo == checksum.SHA512)
	d.resumed = false
	d.s.reset(0)
	d.meter.update(0, d.total, true)
	return d.checkpoint()
}

// checkpoint makes everything submitted durable and records it now. The
// bytes still in the sink's pending chunk are not part of it.
func (d *download) checkpoint() error {
	if err := d.drain(); err != nil {
		return err
	}
	if d.plan != nil {
		ck, err := d.planSnapshot()
		if err != nil {
			return err
		}
		return d.persist(ck)
	}
	ck, err := d.snapshot(d.s.base)
	if err != nil {
		return err
	}
	return d.persist(ck)
}

// snapshot describes the partial file once its first offset bytes are
// written: h must cover exactly them.
func (d *download) snapshot(offset int64) (*checkpoint, error) {
	ck := d.due(offset)
	var err error
	if ck.SHA256, ck.SHA512, err = d.h.state(); err != nil {
		return nil, fmt.Errorf("saving the hash state of job %s: %w", d.r.Job, err)
	}
	return ck, nil
}

// due describes the partial file once its first offset bytes are
// written, but for the hash states: the sink's hasher adds them.
func (d *download) due(offset int64) *checkpoint {
	r := &d.r
	d.lastCkpt, d.ckptAt = time.Now(), offset
	return &checkpoint{
		Job: r.Job, URL: r.URL, Validator: d.validator, Total: d.total, Offset: offset,
		Fence: r.Fence, Fresh: d.fresh, Written: d.lastCkpt.UTC(),
	}
}

// persist makes the partial file durable up to ck.Offset, then records ck,
// unless another writer has taken the job. The sink's goroutine runs it
// after the chunk ending at ck.Offset, so it reads nothing of d but the
// file and the request.
func (d *download) persist(ck *checkpoint) error {
	r := &d.r
	if err := datasync(d.f); err != nil {
		return d.writeError(err, ck.Offset, ck.Total)
	}
	if err := d.stillOwner(); err != nil {
		return err
	}
	testHookCheckpoint()
	if err := writeCheckpoint(r.Root, ck); err != nil {
		// The new owner may have removed the job's files while this
		// writer was replacing its checkpoint: then that is the reason.
		if ferr := d.stillOwner(); errors.Is(ferr, ErrFenced) {
			return ferr
		}
		return d.writeError(err, ck.Offset, ck.Total)
	}
	// A writer paused between its check and its write (a frozen node)
	// may have written after the new owner finished the job and removed
	// its files: then it takes its checkpoint back, so that nothing of
	// the job stays behind in the pool.
	if err := d.stillOwner(); err != nil {
		if errors.Is(err, ErrFenced) {
			if derr := dropOrphanCheckpoint(r.Root, r.Job, r.Fence); derr != nil {
				return errors.Join(err, fmt.Errorf("removing the checkpoint this writer wrote after losing the job: %w", derr))
			}
		}
		return err
	}
	if d.onDurable != nil {
		d.onDurable(ck.Offset)
	}
	return nil
}

// stillOwner fails with ErrFenced when this writer lost the job: a higher
// fence claimed it, or its partial file is no longer the one this writer
// holds open (the new owner finished or discarded it while this one was
// frozen or cut off). The sink's goroutine calls it too.
func (d *download) stillOwner() error {
	r := &d.r
	if err := checkFence(r.Root, r.Job, r.Fence); err != nil {
		return err
	}
	held, err := d.f.Stat()
	if err != nil {
		return d.localError("reading the partial file", err)
	}
	onDisk, err := r.Root.Stat(partialPath(r.Job))
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !os.SameFile(held, onDisk)) {
		return errclass.New(errclass.Fenced, "the partial file of job %s is gone or replaced: another writer finished or removed it; this writer stops", r.Job)
	}
	if err != nil {
		return d.localError("reading the partial file", err)
	}
	return nil
}

// submit hands the sink's pending chunk over to be hashed and written,
// with a checkpoint when one is due: CheckpointEvery after the last one,
// or once CheckpointBytes were submitted since, whichever comes first.
// The byte bound is what a fast origin needs: at 50 MiB/s, 2 s are 100 MiB
// that a node lost mid-download would make the next one fetch again.
func (d *download) submit() error {
	var ck *checkpoint
	if !d.noCheckpoints && (time.Since(d.lastCkpt) >= d.r.CheckpointEvery || d.s.end()-d.ckptAt >= d.r.CheckpointBytes) {
		ck = d.due(d.s.end())
	}
	return d.sinkError(d.s.submit(d.h, ck))
}

// finishSink hashes and writes the sink's pending bytes after every
// submitted chunk: the hashes are the sink's until it is drained.
func (d *download) finishSink() error {
	if err := d.drain(); err != nil {
		return err
	}
	d.h.Write(d.s.pending())
	return d.sinkError(d.s.finish())
}

// flush writes the rest of a complete body and waits until all of it is
// in the file, which then ends where the body did (it may have been
// allocated further, for a size the origin announced but did not send).
func (d *download) flush() error {
	if err := d.finishSink(); err != nil {
		return err
	}
	if err := d.f.Truncate(d.offset()); err != nil {
		return d.localError("truncating the partial file", err)
	}
	return nil
}

// drain waits until every submitted chunk is written.
func (d *download) drain() error { return d.sinkError(d.s.drain()) }

// sinkError explains a write the sink failed; checkpoint failures come
// explained already.
func (d *download) sinkError(err error) error {
	if wf, ok := errors.AsType[*writeFailure](err); ok {
		return d.writeError(wf.err, wf.at, d.total)
	}
	return err
}

// stopped reports why a call ends early. For a cancelled ctx it first
// saves a checkpoint, so that shutdown loses nothing.
func (d *download) stopped(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	if d.h != nil {
		d.checkpoint()
	}
	return fmt.Errorf("download of job %s stopped at %s: %w; the partial file is kept to resume", d.r.Job, size(d.offset()), ctx.Err())
}

// backoff waits before the next attempt: capped exponential with jitter,
// or what the origin asked for if that is longer.
func (d *download) backoff(ctx context.Context, fails int, retryAfter time.Duration) error {
	b := d.r.Backoff << min(fails-1, 5)
	b = min(b, 30*d.r.Backoff)
	wait := b/2 + rand.N(b/2+1)
	if retryAfter > wait {
		wait = min(retryAfter, maxRetryAfter)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ensureSpace fails with ErrNoSpace if the pool cannot hold the rest of
// the file, before any of it is fetched, and otherwise allocates the
// whole file where the filesystem can: the space is then reserved for
// this download, and writes fill allocated blocks instead of growing the
// file (fewer metadata updates for each checkpoint to make durable).
func (d *download) ensureSpace() error {
	need := d.total - d.offset()
	if d.total < 0 || need <= 0 {
		return nil
	}
	what := "the image needs"
	if d.offset() > 0 {
		what = "the rest of the image needs"
	}
	free := freeSpace(d.r.Root, poolfs.PartialDir)
	if free >= 0 && free < need {
		return errclass.New(errclass.NoSpace, "%s has %s free; %s %s; free space or choose another pool", d.r.Describe, size(free), what, size(need))
	}
	if err := allocate(d.f, d.total); err != nil {
		if isNoSpace(err) {
			return errclass.Wrap(errclass.NoSpace, err, "%s has not enough space left: %s %s; free space or choose another pool", d.r.Describe, what, size(need))
		}
		return d.localError("allocating the partial file", err)
	}
	return nil
}

// writeError explains a failed write at offset at of a file of total
// bytes (-1: unknown). It reads nothing of d but the request: the sink's
// goroutine calls it too.
func (d *download) writeError(err error, at, total int64) error {
	if isNoSpace(err) {
		of := "an unknown size"
		if total >= 0 {
			of = size(total)
		}
		return errclass.Wrap(errclass.NoSpace, err, "%s ran out of space after %s of %s; free space or choose another pool", d.r.Describe, size(at), of)
	}
	return d.localError("writing the partial file", err)
}

// localError reports a failure of the pool's filesystem. It is not
// terminal: the disk may come back, and the job resumes.
func (d *download) localError(what string, err error) error {
	return fmt.Errorf("%s of job %s in %s: %w", what, d.r.Job, d.r.Describe, cause(err))
}

// cause strips the *PathError wrapper, whose path is the root-relative
// name and says less than the message around it.
func cause(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// verify compares the digests of what was written with the expected one.
func (d *download) verify() error {
	d.meter.phase(PhaseVerifying, d.offset(), d.total)
	d.sha256, d.sha512 = d.h.sums()
	want := d.r.Expected
	got := d.sha256
	if want.Algo == checksum.SHA512 {
		got = d.sha512
	}
	if want.IsZero() || got == want.Hex {
		return nil
	}
	if d.upload {
		return errclass.New(errclass.ChecksumMismatch, "checksum mismatch: expected %s, got %s:%s; the uploaded bytes are not the file the checksum names (check the file and the checksum, then upload it again)", want, want.Algo, got)
	}
	return errclass.New(errclass.ChecksumMismatch, "checksum mismatch: expected %s, got %s:%s; the file at %s is not the one the checksum names (check the URL or the checksum)", want, want.Algo, got, d.r.URL)
}

// finish moves the verified file into place durably.
func (d *download) finish() (Result, error) {
	r := &d.r
	d.meter.phase(PhaseFinalizing, d.offset(), d.total)
	res := Result{SHA256: d.sha256, SHA512: d.sha512, Size: d.offset(), Dest: r.Dest, Resumed: d.resumed, FetchedBytes: d.fetched}
	if err := d.f.Sync(); err != nil {
		return Result{}, d.writeError(err, d.offset(), d.total)
	}
	var err error
	if res.Format, res.VirtualSize, err = Sniff(d.f, d.offset()); err != nil {
		return Result{}, d.localError("reading the header of the partial file", err)
	}
	if err := d.stillOwner(); err != nil {
		return Result{}, err
	}
	return d.place(res, d.offset(), "the image")
}

// place renames the synced partial file of size bytes (what, in errors) to
// Dest without replacing a file, syncs Dest's directory and removes the
// checkpoint: res, with its file in place. A Dest that already holds the
// same bytes counts as done (res.AlreadyExisted); other bytes are a
// conflict.
func (d *download) place(res Result, size int64, what string) (Result, error) {
	r := &d.r
	if err := r.Root.MkdirAll(path.Dir(r.Dest), 0o755); err != nil {
		return Result{}, d.localError("creating the directory of "+r.Dest, err)
	}
	err := renameNoReplace(r.Root, partialPath(r.Job), r.Dest)
	if errors.Is(err, fs.ErrExist) {
		same, err := sameFile(r.Root, r.Dest, size, d.sha256)
		if err != nil {
			return Result{}, d.localError("comparing with the existing "+r.Dest, err)
		}
		if !same {
			return Result{}, errclass.New(errclass.Conflict, "%s already holds %s with other content; delete it or choose another name", r.Describe, r.Dest)
		}
		res.AlreadyExisted = true
		return res, Discard(r.Root, r.Job)
	}
	if err != nil {
		return Result{}, d.localError("moving "+what+" to "+r.Dest, err)
	}
	if err := atomicfile.SyncDir(r.Root, path.Dir(r.Dest)); err != nil {
		return Result{}, d.localError("syncing the directory of "+r.Dest, err)
	}
	if err := Discard(r.Root, r.Job); err != nil {
		return Result{}, d.localError("removing the checkpoint", err)
	}
	return res, nil
}

// discard removes the job's files after a terminal error, unless another
// writer has claimed the job meanwhile: its files are not ours to remove.
func (d *download) discard() {
	if owner, err := ownerFence(d.r.Root, d.r.Job); err != nil || owner > d.r.Fence {
		return
	}
	Discard(d.r.Root, d.r.Job)
}
