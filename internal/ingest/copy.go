package ingest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"strconv"
	"time"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// Copy methods, as CopyResult reports them.
const (
	MethodReflink       = "reflink"
	MethodCopyFileRange = "copy_file_range"
	MethodReadWrite     = "read/write"
)

// copyChunk is how much one copy_file_range or read/write step moves
// between checks of ctx and checkpoints, by default.
const copyChunk int64 = 64 << 20

// CopyRequest describes a copy of a file from a pool this node mounts
// into another (or the same) pool: the local half of a copy job.
type CopyRequest struct {
	Job   string
	Fence uint64
	// Src and SrcPath name the file to copy.
	Src     *os.Root
	SrcPath string
	// Source identifies the file across restarts ("local:<pool>/<path>"):
	// a checkpoint of another source is not resumed.
	Source string
	// Root, Dest, Expected, Describe, Progress and CheckpointEvery are as
	// in Request. Expected must be set: a copy is always verified.
	Root            *os.Root
	Dest            string
	Expected        checksum.Digest
	Describe        string
	Progress        func(Progress)
	CheckpointEvery time.Duration
	// Chunk is how much one step moves between checks of ctx and
	// checkpoints (default 64 MiB).
	Chunk int64
}

// CopyResult is a finished copy.
type CopyResult struct {
	Result
	// Method says how the bytes moved: MethodReflink (the filesystem
	// shares the extents), MethodCopyFileRange (copied in the kernel) or
	// MethodReadWrite (through user space, across filesystems that allow
	// neither); empty when this call only verified what an earlier one
	// had copied.
	Method string
}

// Copy copies r.SrcPath into r.Dest through the job's partial file, like
// Download: the partial file is claimed with the fence, checkpointed (its
// offset, after fdatasync) every CheckpointEvery so an interrupted copy
// resumes where it was, verified against r.Expected by reading the copy
// once (reflink and copy_file_range move data without user space seeing
// it, so the digest is taken from what is on the target disk), then
// fsynced and renamed into place. Terminal failures remove the partial
// file; a cancelled ctx keeps it.
func Copy(ctx context.Context, r CopyRequest) (CopyResult, error) {
	req := Request{Job: r.Job, Fence: r.Fence, URL: r.Source, Expected: r.Expected, Root: r.Root, Dest: r.Dest,
		Describe: r.Describe, CheckpointEvery: r.CheckpointEvery}
	if err := req.check(); err != nil {
		return CopyResult{}, err
	}
	if r.Expected.IsZero() || r.Src == nil {
		return CopyResult{}, errclass.New(errclass.InvalidArgument, "copy of job %s: the source and its expected digest are required", r.Job)
	}
	d := &download{r: req, total: -1, meter: newMeter(r.Progress)}
	res, err := d.copy(ctx, r)
	if d.f != nil {
		d.f.Close()
	}
	if errors.Is(err, ErrTerminal) {
		d.discard()
	}
	return res, err
}

func (d *download) copy(ctx context.Context, cr CopyRequest) (CopyResult, error) {
	r := &d.r
	d.meter.phase(PhasePreflight, 0, -1)
	src, err := cr.Src.Open(cr.SrcPath)
	if errors.Is(err, fs.ErrNotExist) {
		return CopyResult{}, errclass.New(errclass.Unavailable, "the source %s is not there any more", cr.SrcPath)
	}
	if err != nil {
		return CopyResult{}, d.localError("opening the source "+cr.SrcPath, err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return CopyResult{}, d.localError("reading the source "+cr.SrcPath, err)
	}
	if !st.Mode().IsRegular() {
		return CopyResult{}, errclass.New(errclass.InvalidArgument, "the source %s is not a regular file", cr.SrcPath)
	}
	total := st.Size()
	validator := strconv.FormatInt(total, 10) + "@" + strconv.FormatInt(st.ModTime().UnixNano(), 10)
	d.total = total

	ck, err := readCheckpoint(r.Root, r.Job)
	if err != nil {
		return CopyResult{}, fmt.Errorf("reading the checkpoint of job %s in %s: %w", r.Job, r.Describe, err)
	}
	if err := checkFence(r.Root, r.Job, r.Fence); err != nil {
		return CopyResult{}, err
	}
	if err := r.Root.MkdirAll(poolfs.PartialDir, 0o755); err != nil {
		return CopyResult{}, d.localError("creating "+poolfs.PartialDir, err)
	}
	if d.f, err = r.Root.OpenFile(partialPath(r.Job), os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return CopyResult{}, d.localError("opening the partial file", err)
	}
	if err := claim(r.Root, r.Job, r.Fence); err != nil {
		return CopyResult{}, d.localError("claiming the job", err)
	}
	var off int64
	if ck != nil && ck.URL == r.URL && ck.Validator == validator && ck.Offset <= total {
		if fi, err := d.f.Stat(); err == nil && fi.Size() >= ck.Offset {
			off, d.resumed = ck.Offset, ck.Offset > 0
		}
	}
	if err := d.f.Truncate(off); err != nil {
		return CopyResult{}, d.localError("truncating the partial file", err)
	}
	if free := freeSpace(r.Root, poolfs.PartialDir); free >= 0 && free < total-off {
		return CopyResult{}, errclass.New(errclass.NoSpace, "%s has %s free, the copy needs %s more; free space or copy into another pool", r.Describe, size(free), size(total-off))
	}
	d.meter.rebase(off)
	save := func(at int64) error {
		return d.persist(&checkpoint{Job: r.Job, URL: r.URL, Validator: validator, Total: total, Offset: at, Fence: r.Fence, Written: time.Now()})
	}
	if err := save(off); err != nil {
		return CopyResult{}, err
	}

	chunk := cmp.Or(cr.Chunk, copyChunk)
	// The method says how this call moved bytes; none when it only
	// verified what an earlier call had copied.
	method := ""
	if off == 0 && total > 0 && reflink(d.f, src) == nil {
		method, off = MethodReflink, total
	}
	d.meter.phase(PhaseDownloading, off, total)
	last := time.Now()
	useRange := true
	for off < total {
		if err := ctx.Err(); err != nil {
			return CopyResult{}, errors.Join(err, save(off))
		}
		n := min(chunk, total-off)
		var moved int64
		if useRange {
			moved, err = copyRange(d.f, src, off, n)
			if errors.Is(err, errNoCopyRange) {
				useRange, err = false, nil
				continue
			}
			if err == nil {
				method = MethodCopyFileRange
			}
		} else {
			moved, err = io.Copy(io.NewOffsetWriter(d.f, off), io.NewSectionReader(src, off, n))
			method = MethodReadWrite
		}
		if err != nil {
			return CopyResult{}, d.writeError(err, off, total)
		}
		if moved == 0 {
			return CopyResult{}, errclass.New(errclass.Unavailable, "the source %s ended at %s of %s: it changed while being copied", cr.SrcPath, size(off), size(total))
		}
		off += moved
		d.fetched += moved
		d.meter.update(off, total, true)
		if time.Since(last) >= r.CheckpointEvery {
			if err := save(off); err != nil {
				return CopyResult{}, err
			}
			last = time.Now()
		}
	}
	if err := save(off); err != nil {
		return CopyResult{}, err
	}
	if err := d.verifyCopy(ctx, total); err != nil {
		return CopyResult{}, err
	}
	res, err := d.finishCopy(total)
	return CopyResult{Result: res, Method: method}, err
}

// verifyCopy reads the copy once and compares its digest with the
// expected one; a mismatch is terminal.
func (d *download) verifyCopy(ctx context.Context, total int64) error {
	d.meter.phase(PhaseVerifying, 0, total)
	h256 := sha256.New()
	var h512 hash.Hash
	w := io.Writer(h256)
	if d.r.Expected.Algo == checksum.SHA512 {
		h512 = sha512.New()
		w = io.MultiWriter(h256, h512)
	}
	buf := make([]byte, chunkSize)
	var done int64
	for done < total {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := d.f.ReadAt(buf[:min(int64(len(buf)), total-done)], done)
		w.Write(buf[:n])
		done += int64(n)
		d.meter.update(done, total, false)
		if err != nil && !(errors.Is(err, io.EOF) && done == total) {
			return d.localError("reading the copy to verify it", err)
		}
	}
	d.sha256 = hex.EncodeToString(h256.Sum(nil))
	got := d.sha256
	if h512 != nil {
		d.sha512 = hex.EncodeToString(h512.Sum(nil))
		got = d.sha512
	}
	if got != d.r.Expected.Hex {
		return errclass.New(errclass.ChecksumMismatch, "checksum mismatch: the copy is %s:%s, the source image's recorded digest is %s; the source file changed on disk (verify it with quarry image verify)", d.r.Expected.Algo, got, d.r.Expected)
	}
	return nil
}

// finishCopy moves the verified copy into place durably; a Dest that
// already holds the same bytes counts as done.
func (d *download) finishCopy(total int64) (Result, error) {
	r := &d.r
	d.meter.phase(PhaseFinalizing, total, total)
	res := Result{SHA256: d.sha256, SHA512: d.sha512, Size: total, Dest: r.Dest, Resumed: d.resumed, FetchedBytes: d.fetched, Verified: true}
	if err := d.f.Sync(); err != nil {
		return Result{}, d.writeError(err, total, total)
	}
	var err error
	if res.Format, res.VirtualSize, err = Sniff(d.f, total); err != nil {
		return Result{}, d.localError("reading the header of the copy", err)
	}
	if err := checkFence(r.Root, r.Job, r.Fence); err != nil {
		return Result{}, err
	}
	return d.place(res, total, "the copy")
}
