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
)

// maxRetryAfter bounds how long a Retry-After can hold the job inside one
// call; an origin asking for longer is retried after this.
const maxRetryAfter = 5 * time.Minute

// download is the state of one Download call. The invariant, between
// writes: the partial file holds exactly offset bytes and h covers them.
type download struct {
	r         Request
	f         *os.File
	h         *hashes
	offset    int64
	total     int64  // -1: unknown
	validator string // If-Range value; "": this origin cannot be resumed safely
	resumed   bool
	fetched   int64
	fresh     bool // the one download from zero after a mismatch has begun
	lastCkpt  time.Time
	buf       []byte
	meter     *meter
	arrived   atomic.Int64 // bytes received, read by the stall watchdog
	sha256    string
	sha512    string
}

func (d *download) run(ctx context.Context) (Result, error) {
	r := &d.r
	d.meter.phase(PhasePreflight, 0, -1)
	ck, err := readCheckpoint(r.Root, r.Job)
	if err != nil {
		return Result{}, fmt.Errorf("reading the checkpoint of job %s in %s: %w", r.Job, r.Describe, err)
	}
	if ck != nil && ck.Fence > r.Fence {
		return Result{}, fenced("job %s belongs to a writer with fence %d (this one has %d); this writer leaves its partial file alone", r.Job, ck.Fence, r.Fence)
	}
	info, err := d.preflight(ctx)
	if err != nil {
		return Result{}, d.stopped(ctx, err)
	}
	if err := r.Root.MkdirAll(PartialDir, 0o755); err != nil {
		return Result{}, d.localError("creating "+PartialDir, err)
	}
	if d.f, err = r.Root.OpenFile(partialPath(r.Job), os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return Result{}, d.localError("opening the partial file", err)
	}
	d.buf = make([]byte, bufSize)
	if err := d.start(ck, info); err != nil {
		return Result{}, err
	}
	if d.total >= 0 {
		if err := d.ensureSpace(d.total - d.offset); err != nil {
			return Result{}, err
		}
	}

	highWater, fails := d.offset, 0
	for {
		err := d.attempt(ctx)
		if err == nil && d.total >= 0 && d.offset != d.total {
			err = &transientError{msg: fmt.Sprintf("the origin ended the body at %s of %s", size(d.offset), size(d.total))}
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
		if d.offset > highWater {
			highWater, fails = d.offset, 0
		}
		fails++
		if fails >= r.MaxAttempts {
			d.checkpoint() // best effort: the next call resumes from here
			return Result{}, fmt.Errorf("download of %s failed %d times in a row (last: %w); it resumes from %s when retried", r.URL, fails, err, size(d.offset))
		}
		if err := d.backoff(ctx, fails, te.retryAfter); err != nil {
			return Result{}, d.stopped(ctx, err)
		}
	}
}

// start resumes from ck when it still describes the origin's file, and
// otherwise starts from zero; either way it claims the job with this
// writer's fence before any byte is written.
func (d *download) start(ck *checkpoint, info preflight) error {
	r := &d.r
	d.validator, d.total = info.validator, info.total
	if ck != nil && d.resumable(ck, info) {
		h, err := restoreHashes(ck.SHA256, ck.SHA512, r.Expected.Algo == "sha512")
		st, serr := d.f.Stat()
		if err == nil && serr == nil && st.Size() >= ck.Offset {
			// Bytes past the checkpoint were never made durable with a hash
			// state to match; they go.
			if err := d.f.Truncate(ck.Offset); err != nil {
				return d.localError("truncating the partial file", err)
			}
			d.h, d.offset, d.validator, d.total, d.resumed = h, ck.Offset, ck.Validator, ck.Total, ck.Offset > 0
			d.fresh = ck.Fresh
			if info.total >= 0 {
				d.total = info.total
			}
			return d.checkpoint()
		}
	}
	return d.restart()
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
	if err := d.f.Truncate(0); err != nil {
		return d.localError("truncating the partial file", err)
	}
	d.h = newHashes(d.r.Expected.Algo == "sha512")
	d.offset, d.resumed = 0, false
	d.meter.update(0, d.total, true)
	return d.checkpoint()
}

// checkpoint makes the partial file durable up to offset, then records
// where it stands, unless another writer has taken the job.
func (d *download) checkpoint() error {
	r := &d.r
	if err := datasync(d.f); err != nil {
		return d.writeError(err)
	}
	if err := checkFence(r.Root, r.Job, r.Fence); err != nil {
		return err
	}
	s256, s512, err := d.h.state()
	if err != nil {
		return fmt.Errorf("saving the hash state of job %s: %w", r.Job, err)
	}
	ck := &checkpoint{
		Job: r.Job, URL: r.URL, Validator: d.validator, Total: d.total, Offset: d.offset,
		Fence: r.Fence, SHA256: s256, SHA512: s512, Fresh: d.fresh, Written: time.Now().UTC(),
	}
	if err := writeCheckpoint(r.Root, ck); err != nil {
		return d.writeError(err)
	}
	d.lastCkpt = time.Now()
	return nil
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
	return fmt.Errorf("download of job %s stopped at %s: %w; the partial file is kept to resume", d.r.Job, size(d.offset), ctx.Err())
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

// ensureSpace fails with ErrNoSpace if the pool cannot hold need more
// bytes, before any of them is fetched.
func (d *download) ensureSpace(need int64) error {
	if need <= 0 {
		return nil
	}
	free := freeSpace(d.r.Root, PartialDir)
	if free < 0 || free >= need {
		return nil
	}
	what := "the image needs"
	if d.offset > 0 {
		what = "the rest of the image needs"
	}
	return noSpace(nil, "%s has %s free; %s %s; free space or choose another pool", d.r.Describe, size(free), what, size(need))
}

func (d *download) writeError(err error) error {
	if isNoSpace(err) {
		total := "an unknown size"
		if d.total >= 0 {
			total = size(d.total)
		}
		return noSpace(err, "%s ran out of space after %s of %s; free space or choose another pool", d.r.Describe, size(d.offset), total)
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
	d.meter.phase(PhaseVerifying, d.offset, d.total)
	d.sha256, d.sha512 = d.h.sums()
	want := d.r.Expected
	got := d.sha256
	if want.Algo == "sha512" {
		got = d.sha512
	}
	if want.IsZero() || got == want.Hex {
		return nil
	}
	return checksumMismatch("checksum mismatch: expected %s, got %s:%s; the file at %s is not the one the checksum names (check the URL or the checksum)", want, want.Algo, got, d.r.URL)
}

// finish moves the verified file into place durably.
func (d *download) finish() (Result, error) {
	r := &d.r
	d.meter.phase(PhaseFinalizing, d.offset, d.total)
	res := Result{SHA256: d.sha256, SHA512: d.sha512, Size: d.offset, Dest: r.Dest, Resumed: d.resumed, FetchedBytes: d.fetched}
	if err := d.f.Sync(); err != nil {
		return Result{}, d.writeError(err)
	}
	var err error
	if res.Format, res.VirtualSize, err = Sniff(d.f, d.offset); err != nil {
		return Result{}, d.localError("reading the header of the partial file", err)
	}
	if err := checkFence(r.Root, r.Job, r.Fence); err != nil {
		return Result{}, err
	}
	if err := r.Root.MkdirAll(path.Dir(r.Dest), 0o755); err != nil {
		return Result{}, d.localError("creating the directory of "+r.Dest, err)
	}
	err = renameNoReplace(r.Root, partialPath(r.Job), r.Dest)
	if errors.Is(err, fs.ErrExist) {
		same, err := sameFile(r.Root, r.Dest, d.offset, d.sha256)
		if err != nil {
			return Result{}, d.localError("comparing with the existing "+r.Dest, err)
		}
		if !same {
			return Result{}, exists("%s already holds %s with other content; delete it or choose another name", r.Describe, r.Dest)
		}
		res.AlreadyExisted = true
		return res, Discard(r.Root, r.Job)
	}
	if err != nil {
		return Result{}, d.localError("moving the image to "+r.Dest, err)
	}
	if err := syncDir(r.Root, path.Dir(r.Dest)); err != nil {
		return Result{}, d.localError("syncing the directory of "+r.Dest, err)
	}
	if err := r.Root.Remove(checkpointPath(r.Job)); err != nil && !errors.Is(err, fs.ErrNotExist) {
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
