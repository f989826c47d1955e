// Package ingest downloads one file into a storage pool: resumable,
// verified, atomic. It is the agent's half of a download job.
//
// The contract of Download:
//
//   - Nothing outside the pool root is touched (os.Root), and nothing is
//     fetched but through the caller's HTTP client, which enforces the URL
//     policy; a refusal is terminal.
//   - Bytes go to <pool>/.quarry/partial/<job>, hashed as they stream
//     (SHA-256 always, SHA-512 when expected): the data is never read
//     twice. The file is allocated to its full size before the first
//     byte where the filesystem can, and written with O_DIRECT where it
//     allows, by a goroutine of its own while the network is read (see
//     sink). A partial file is never visible as an image: only a
//     verified, fsynced file is renamed to Dest, and the directory is
//     fsynced.
//   - Every CheckpointEvery (2 s) or every CheckpointBytes (32 MiB),
//     whichever comes first, the partial file is fdatasynced and a
//     checkpoint (offset, validator, serialized hash states, fence) is
//     replaced atomically, so a later call, on this node or on another one
//     sharing the pool, resumes with Range and If-Range and fetches again
//     at most what arrived since. An origin that
//     answers 200 instead (its file changed, or it ignores ranges) is
//     downloaded again from zero.
//   - Transient failures (connection errors, resets, 408, 429, 5xx,
//     stalls) are retried within the call with capped exponential backoff
//     and jitter, honouring Retry-After, resuming from the last byte
//     written. After MaxAttempts failures in a row without progress the
//     call returns a transient error and keeps its files.
//   - Terminal failures (ErrTerminal: other 4xx, policy refusals, no
//     space, a checksum mismatch on a second download from zero, Dest
//     taken by other content, a malformed request) remove the partial file and checkpoint.
//     A cancelled ctx keeps them (a checkpoint is written first), because
//     agent shutdown must not lose work; Discard is the clean-up after an
//     explicit cancel.
//   - A job is written by one writer at a time. Writers carry a fence (the
//     job's owner epoch): a writer whose fence is lower than the job's
//     owner's stops with ErrFenced and leaves the files alone; an equal
//     one (the same owner, restarted) resumes; a higher one claims the
//     job (<job>.owner, which only claims write) and resumes. Fences are
//     checked at start, at every checkpoint and before the final rename,
//     so a writer that lost the job stops within one checkpoint interval.
//     Within one process the caller must not run two Downloads of one job
//     at once.
//   - A file of SegmentMin and up from an origin that announced ranges and
//     a validator goes in segments over up to Connections connections,
//     each written at its offsets and resumed from its own checkpointed
//     progress; the hashes still follow the file in order (segments.go).
//     An origin that then ignores a range or changes its validators gets
//     one stream from the start.
//   - Memory stays constant: 8 MiB of chunks, whatever the file size, and
//     for a segmented download 256 KiB per connection and 1 MiB to hash.
package ingest

import (
	"context"
	"errors"
	"net/http"
	"os"
	"time"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// Request describes one download.
type Request struct {
	// Job names the partial file and checkpoint; the same job resumes.
	Job string
	// Fence is the writer's owner epoch for the job (see the package
	// comment). It must grow each time the job moves to another writer.
	Fence uint64
	URL   string
	// Expected is the digest the file must have; zero expects nothing
	// (SHA-256 is still computed and reported).
	Expected checksum.Digest
	// Root is the pool directory.
	Root *os.Root
	// Dest is the final path inside Root, such as "images/ubuntu.qcow2".
	Dest string
	// Client fetches; it must enforce the URL policy
	// (urlpolicy.Policy.Client) and have no overall Timeout, since stalls
	// are detected here and a large image takes long.
	Client *http.Client
	// Describe names the pool for messages: "pool local on node n1".
	Describe string
	// Progress, if set, is called at most four times a second and at each
	// phase change, from the downloading goroutine; it must not block.
	Progress func(Progress)
	// CheckpointEvery is how often progress is made durable; default 2 s.
	CheckpointEvery time.Duration
	// CheckpointBytes makes progress durable sooner, once this many bytes
	// arrived since the last checkpoint; default 32 MiB. A checkpoint
	// covers whole chunks, so it may come up to one chunk (1 MiB) later.
	CheckpointBytes int64
	// StallTimeout: fewer than 64 KiB arriving in this long is a stall;
	// default 30 s.
	StallTimeout time.Duration
	// MaxAttempts bounds transient failures in a row without progress;
	// default 8. A failed attempt that received bytes first does not count:
	// with 1, the call retries only attempts that got further.
	MaxAttempts int
	// OnFailure, if set, is called from the downloading goroutine with
	// every transient failure of an attempt, before the call retries or
	// gives up; it must not block.
	OnFailure func(Failure)
	// Backoff is the wait after the first failure; it doubles after each
	// further one, up to 30 × Backoff. Default 1 s.
	Backoff time.Duration
	// Connections is how many connections a segmented download may use
	// (see segments.go); 0 or 1: one stream.
	Connections int
	// SegmentMin is the smallest file fetched in segments; default 64 MiB.
	SegmentMin int64
	// Limiter, if set, throttles the bytes received over every connection
	// of the download together (a *rate.Limiter fits; the agent shares the
	// node's rate between its downloads through it).
	Limiter Limiter
	// OnNotice, if set, is told in one sentence how the download goes on
	// when that changes ("over 4 connections", "the origin ignored a range
	// request: one stream from the start"); it must not block and may be
	// called from several goroutines.
	OnNotice func(string)
}

// Limiter throttles received bytes: WaitN blocks until n more may arrive,
// n at most Burst().
type Limiter interface {
	WaitN(ctx context.Context, n int) error
	Burst() int
}

// Progress phases.
const (
	PhasePreflight   = "preflight"
	PhaseDownloading = "downloading"
	PhaseVerifying   = "verifying"
	PhaseFinalizing  = "finalizing"
)

// Failure is one failed attempt.
type Failure struct {
	Err error
	// Progressed: the attempt received bytes before it failed.
	Progressed bool
	// RetryAfter is what the origin asked to wait; 0: nothing.
	RetryAfter time.Duration
}

// Progress is a snapshot of a running download.
type Progress struct {
	Phase       string
	Done        int64   // bytes in the partial file
	Total       int64   // -1 while unknown
	BytesPerSec float64 // recent rate
	// Connections fetching now: more than one for a segmented download.
	Connections int
}

// Result describes the image in place.
type Result struct {
	SHA256      string // hex
	SHA512      string // hex, when the expected digest was SHA-512
	Size        int64
	Format      string // FormatQCOW2, FormatRaw, …
	VirtualSize int64  // disk size a VM sees (0 if the header does not say)
	Dest        string
	// Resumed says the download went on from an earlier call's checkpoint.
	Resumed bool
	// FetchedBytes counts the bytes received in this call.
	FetchedBytes int64
	// AlreadyExisted says Dest held this very file already; the download
	// was dropped and Dest left as it was.
	AlreadyExisted bool
	// Verified says the digest was checked against an expected one
	// (uploads, whose expected digest may come at the end).
	Verified bool
}

const stallBytes = 64 << 10

func (r *Request) check() error {
	if err := checkJob(r.Job); err != nil {
		return err
	}
	switch {
	case r.Root == nil:
		return errclass.New(errclass.Terminal, "download of job %s has no pool root", r.Job)
	}
	if err := poolfs.CheckPath(r.Dest); err != nil {
		return errclass.New(errclass.InvalidArgument, "destination %v", err)
	}
	if poolfs.IsMeta(r.Dest) {
		return errclass.New(errclass.InvalidArgument, "destination %q is inside the pool's %s directory, which holds Quarry's own files", shorten(r.Dest), poolfs.MetaDir)
	}
	if !r.Expected.IsZero() {
		d, err := checksum.ParseDigest(r.Expected.String())
		if err != nil {
			return errclass.Wrap(errclass.InvalidArgument, err, "%v", err)
		}
		r.Expected = d
	}
	if r.CheckpointEvery <= 0 {
		r.CheckpointEvery = 2 * time.Second
	}
	if r.CheckpointBytes <= 0 {
		r.CheckpointBytes = 32 << 20
	}
	if r.StallTimeout <= 0 {
		r.StallTimeout = 30 * time.Second
	}
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 8
	}
	if r.Backoff <= 0 {
		r.Backoff = time.Second
	}
	if r.SegmentMin <= 0 {
		r.SegmentMin = 64 << 20
	}
	if r.Describe == "" {
		r.Describe = "the pool"
	}
	return nil
}

// Download fetches r.URL into r.Dest; see the package comment.
func Download(ctx context.Context, r Request) (Result, error) {
	if err := r.check(); err != nil {
		return Result{}, err
	}
	if r.Client == nil {
		return Result{}, errclass.New(errclass.Terminal, "download of job %s has no HTTP client", r.Job)
	}
	d := &download{r: r, total: -1, meter: newMeter(r.Progress)}
	res, err := d.run(ctx)
	if d.s != nil {
		d.s.close()
	}
	if d.f != nil {
		d.f.Close()
	}
	if errors.Is(err, ErrTerminal) {
		d.discard()
	}
	return res, err
}
