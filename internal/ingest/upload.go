package ingest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"time"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// An upload is a download whose bytes come from a client, chunk stream
// by chunk stream, instead of from an origin: it shares the partial file,
// sink, hashes, checkpoints, fencing and the verified rename into place
// with Download (the same download value does the writing), and differs
// only in where the bytes come from and when they are made durable:
// every Write ends with a checkpoint, so the offset a client is told is
// always on disk.

// PhaseUploading is the phase of an upload while it receives bytes.
const PhaseUploading = "uploading"

// UploadRequest describes one upload.
type UploadRequest struct {
	Job   string
	Fence uint64
	Root  *os.Root
	// Dest is the final path inside Root.
	Dest string
	// Length is the size of the whole file.
	Length int64
	// Expected is the digest the file must have, when known at creation;
	// Finish may give one too. SHA-256 is always computed.
	Expected checksum.Digest
	// Describe names the pool for messages: "pool local on node n1".
	Describe string
	// CheckpointEvery and CheckpointBytes bound the work a crash in the
	// middle of a Write loses, as for downloads (2 s, 32 MiB).
	CheckpointEvery time.Duration
	CheckpointBytes int64
	// Progress, if set, is called as for downloads.
	Progress func(Progress)
	// OnDurable, if set, is called with the offset every checkpoint made
	// durable, from the goroutine that wrote it; it must not block.
	OnDurable func(offset int64)
	// KindFromContent: Finish moves the file to iso/ or images/ (same file
	// name as Dest) by what its bytes are, when that differs from Dest's
	// directory and the path there is free: see ContentDest.
	KindFromContent bool
}

// Upload is an open upload: its partial file, with the first Offset bytes
// durable. It is not safe for concurrent use: one Write at a time.
type Upload struct {
	d               *download
	kindFromContent bool
}

// uploadSource stands for the origin in an upload's checkpoint, so that
// a download's checkpoint is never taken for an upload's or the reverse.
func uploadSource(job string) string { return "upload:" + job }

// OpenUpload opens the job's partial file, resuming from its checkpoint
// (bytes past it are dropped) or starting from zero, and claims the job
// with r.Fence: a lower fence than the job's owner fails with ErrFenced.
// It checks that the pool has room for what is left, and allocates it.
func OpenUpload(r UploadRequest) (*Upload, error) {
	req := Request{Job: r.Job, Fence: r.Fence, URL: uploadSource(r.Job), Expected: r.Expected, Root: r.Root, Dest: r.Dest,
		Describe: r.Describe, Progress: r.Progress, CheckpointEvery: r.CheckpointEvery, CheckpointBytes: r.CheckpointBytes}
	if err := req.check(); err != nil {
		return nil, err
	}
	if r.Length < 0 {
		return nil, errclass.New(errclass.InvalidArgument, "upload of job %s has a negative length", r.Job)
	}
	d := &download{r: req, total: r.Length, validator: "upload", meter: newMeter(r.Progress), upload: true, onDurable: r.OnDurable}
	u := &Upload{d: d, kindFromContent: r.KindFromContent}
	if err := u.open(); err != nil {
		u.Close()
		if errors.Is(err, ErrTerminal) {
			d.discard()
		}
		return nil, err
	}
	return u, nil
}

func (u *Upload) open() error {
	d := u.d
	r := &d.r
	ck, err := readCheckpoint(r.Root, r.Job)
	if err != nil {
		return fmt.Errorf("reading the checkpoint of job %s in %s: %w", r.Job, r.Describe, err)
	}
	if err := checkFence(r.Root, r.Job, r.Fence); err != nil {
		return err
	}
	if err := r.Root.MkdirAll(poolfs.PartialDir, 0o755); err != nil {
		return d.localError("creating "+poolfs.PartialDir, err)
	}
	if d.f, err = r.Root.OpenFile(partialPath(r.Job), os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return d.localError("opening the partial file", err)
	}
	if d.s, err = newSink(d.f, d.persist); err != nil {
		return d.localError("allocating buffers", err)
	}
	if err := claim(r.Root, r.Job, r.Fence); err != nil {
		return d.localError("claiming the job", err)
	}
	if !u.resume(ck) {
		if err := d.restart(); err != nil {
			return err
		}
	}
	d.meter.phase(PhaseUploading, d.offset(), d.total)
	return d.ensureSpace()
}

// resume goes on from ck if it is this upload's and its bytes are there.
func (u *Upload) resume(ck *checkpoint) bool {
	d := u.d
	if ck == nil || ck.URL != d.r.URL || ck.Total != d.total || ck.Offset < 0 || ck.Offset > d.total {
		return false
	}
	h, err := restoreHashes(ck.SHA256, ck.SHA512, d.r.Expected.Algo == checksum.SHA512)
	st, serr := d.f.Stat()
	if err != nil || serr != nil || st.Size() < ck.Offset {
		return false
	}
	// Bytes past the checkpoint were never made durable with a hash state
	// to match; they go.
	if err := d.f.Truncate(ck.Offset); err != nil {
		return false
	}
	d.h, d.resumed = h, ck.Offset > 0
	d.s.reset(ck.Offset)
	d.meter.rebase(ck.Offset)
	return true
}

// Offset is the number of bytes received and durable.
func (u *Upload) Offset() int64 { return u.d.offset() }

// Length is the size of the whole file.
func (u *Upload) Length() int64 { return u.d.total }

// Resumed says the upload went on from a checkpoint an earlier process
// (or node) wrote.
func (u *Upload) Resumed() bool { return u.d.resumed }

// ErrDropWrite is what a Write's body fails with to have everything that
// Write received dropped: the client's checksum for it did not match.
var ErrDropWrite = errors.New("the client's checksum of these bytes does not match them")

// Write appends body at the upload's offset, which must be at, and
// returns the new durable offset. Checkpoints are taken as for downloads
// while the bytes stream, and once more at the end, so everything Write
// reports is on disk. When reading body fails, what arrived is kept and
// made durable — unless the write is atomic or the error is ErrDropWrite:
// then everything this Write received is dropped (an atomic Write takes
// no checkpoint before its end, so that the last one still describes
// where it began). A body longer than the upload is refused and dropped.
// Running out of space is terminal and removes the partial file.
func (u *Upload) Write(at int64, body io.Reader, atomic bool) (int64, error) {
	off, err := u.write(at, body, atomic)
	if errors.Is(err, ErrNoSpace) {
		u.d.discard()
	}
	return off, err
}

func (u *Upload) write(at int64, body io.Reader, atomic bool) (int64, error) {
	d := u.d
	start := d.offset()
	if at != start {
		return start, errclass.New(errclass.Conflict, "the upload is at %d bytes, not %d", start, at)
	}
	d.noCheckpoints = atomic
	defer func() { d.noCheckpoints = false }()
	d.meter.phase(PhaseUploading, start, d.total)
	for {
		space := d.s.space()
		if left := d.total - d.offset(); int64(len(space)) > left+1 {
			space = space[:left+1]
		}
		n, rerr := body.Read(space)
		if d.offset()+int64(n) > d.total {
			return u.rollback(start, errclass.New(errclass.FailedPrecondition, "the bytes sent go past the upload's length (%s)", size(d.total)))
		}
		if n > 0 {
			d.fetched += int64(n)
			full := d.s.add(n)
			d.meter.update(d.offset(), d.total, false)
			if full {
				if err := d.submit(); err != nil {
					return u.rollback(start, err)
				}
			}
		}
		switch {
		case rerr == io.EOF:
			return d.offset(), u.commit()
		case rerr != nil && !atomic && !errors.Is(rerr, ErrDropWrite):
			if err := u.commit(); err != nil {
				return d.offset(), err
			}
			return d.offset(), rerr
		case rerr != nil:
			return u.rollback(start, rerr)
		}
	}
}

// commit makes every byte received durable and checkpoints it. The last,
// shorter chunk goes through the page cache; O_DIRECT resumes at the next
// aligned offset.
func (u *Upload) commit() error {
	d := u.d
	if err := d.finishSink(); err != nil {
		return err
	}
	d.s.reset(d.s.end())
	d.noCheckpoints = false
	return d.checkpoint()
}

// rollback drops what the current Write received: the partial file is cut
// back to start and the hash state read back from the checkpoint there.
func (u *Upload) rollback(start int64, why error) (int64, error) {
	d := u.d
	if err := d.drain(); err != nil && !errors.Is(why, err) {
		why = errors.Join(why, err)
	}
	ck, err := readCheckpoint(d.r.Root, d.r.Job)
	if err == nil && (ck == nil || ck.Offset != start) {
		err = fmt.Errorf("the checkpoint of job %s is not at %d", d.r.Job, start)
	}
	if err == nil {
		var h *hashes
		if h, err = restoreHashes(ck.SHA256, ck.SHA512, d.r.Expected.Algo == checksum.SHA512); err == nil {
			if err = d.f.Truncate(start); err == nil {
				d.h = h
				d.s.reset(start)
				d.meter.rebase(start)
			}
		}
	}
	if err != nil {
		// The partial file no longer matches its hash state: this writer
		// cannot go on, the next Open resumes from the checkpoint.
		return start, errors.Join(why, d.localError("dropping the bytes of a refused write", err))
	}
	return start, why
}

// Finish verifies the complete file against the expected digest (the
// request's, or expected when that is zero), then moves it into place
// durably. A mismatch removes the partial file (ErrChecksum, naming both
// digests), as does any other terminal error.
func (u *Upload) Finish(expected checksum.Digest) (Result, error) {
	d := u.d
	if d.offset() != d.total {
		return Result{}, errclass.New(errclass.FailedPrecondition, "the upload has %s of %s; send the rest first", size(d.offset()), size(d.total))
	}
	if d.r.Expected.IsZero() && !expected.IsZero() {
		if expected.Algo == checksum.SHA512 && d.h.sha512 == nil {
			return Result{}, errclass.New(errclass.InvalidArgument, "a sha512 checksum must be given when the upload is created; give sha256 at the end instead")
		}
		d.r.Expected = expected
	}
	d.s.setDirect(false)
	err := d.verify()
	if err == nil && u.kindFromContent {
		err = u.placeByContent()
	}
	if err == nil {
		var res Result
		if res, err = d.finish(); err == nil {
			res.Verified = !d.r.Expected.IsZero()
			return res, nil
		}
	}
	if errors.Is(err, ErrTerminal) {
		d.discard()
	}
	return Result{}, err
}

// placeByContent points Dest at the directory the file's content calls
// for, if that path is free.
func (u *Upload) placeByContent() error {
	d := u.d
	format, _, err := Sniff(d.f, d.offset())
	if err != nil {
		return d.localError("reading the header of the partial file", err)
	}
	dest := ContentDest(d.r.Dest, format)
	if dest == d.r.Dest {
		return nil
	}
	if _, err := d.r.Root.Lstat(dest); !errors.Is(err, fs.ErrNotExist) {
		return nil // taken (or unreadable): the name's guess stands
	}
	d.r.Dest = dest
	return nil
}

// ContentDest is where a file of this format (from Sniff) belongs when its
// content decides: iso/ for ISO 9660, images/ for qcow2, vmdk and vhdx,
// under dest's file name. A raw file proves nothing and stays at dest.
func ContentDest(dest, format string) string {
	switch format {
	case FormatISO:
		return poolfs.ImagePath(path.Base(dest), true)
	case FormatQCOW2, FormatVMDK, FormatVHDX:
		return poolfs.ImagePath(path.Base(dest), false)
	}
	return dest
}

// Close releases the upload's file and buffers; its partial file and
// checkpoint stay for the next Open.
func (u *Upload) Close() {
	d := u.d
	if d.s != nil {
		d.s.close()
		d.s = nil
	}
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
}
