package store

import (
	"context"
	"time"
)

// JobState mirrors quarry.v1.JobState.
type JobState string

const (
	JobQueued    JobState = "QUEUED"
	JobRunning   JobState = "RUNNING"
	JobSucceeded JobState = "SUCCEEDED"
	JobFailed    JobState = "FAILED"
	JobCancelled JobState = "CANCELLED"
)

// Active reports whether a job in state s may still change.
func (s JobState) Active() bool { return s == JobQueued || s == JobRunning }

// Job is the durable record of long work: today, downloads.
type Job struct {
	ID      string
	Kind    string // "download", "copy", "upload" or "verify"
	State   JobState
	ImageID string
	PoolID  string
	// Source identifies what is downloaded, for "one job per (source,
	// pool)": "catalog:<id>" or the URL; for a copy made by CopyImage
	// "image:<id>/<name>".
	Source      string
	URL         string
	Checksum    string // expected digest "sha256:<hex>"/"sha512:<hex>"; "" when from a file or none
	ChecksumURL string // checksum file to look the file name up in
	// Owner is the id of the token that created an upload: only it, or an
	// admin, may write to or end the upload. Empty for other jobs.
	Owner string
	// KindFromContent: an upload created without a kind, whose content
	// (ISO 9660, or a qcow2/vmdk/vhdx header) decides at its end whether
	// it goes to iso/ or images/; its name only guessed at creation.
	KindFromContent bool
	// MaxBytesPerSec is the download's own bandwidth limit; 0: none (the
	// node's limit still applies).
	MaxBytesPerSec int64
	// NodeID is the node that owns the job now; Fence increases every time
	// ownership moves, and an agent holding a lower fence must stop.
	NodeID string
	Fence  int64
	// Progress, written at most once a second.
	Phase       string
	BytesDone   int64
	BytesTotal  int64
	BytesPerSec float64
	// Attempts counts every failed fetch attempt of the job.
	Attempts int
	// FailuresInRow counts failed attempts since the job last got
	// further, RetrySince is when the first of them failed: together the
	// retry budget. NextAttemptAt is when the job may be tried again; zero
	// means now.
	FailuresInRow int
	RetrySince    time.Time
	NextAttemptAt time.Time
	// Message says what happened last and, on failure, what to do.
	Message         string
	CancelRequested bool
	CreatedAt       time.Time
	UpdatedAt       time.Time
	StartedAt       time.Time
	FinishedAt      time.Time
}

// JobEvent is one line of a job's history.
type JobEvent struct {
	JobID   string
	Time    time.Time
	Message string
}

// JobFilter selects jobs; zero fields match everything.
type JobFilter struct {
	States  []JobState
	PoolID  string
	NodeID  string
	Kind    string
	ImageID string
}

// RunningJobs is the work one node is doing now, for ranking nodes.
type RunningJobs struct {
	Count int
	// BytesPerSec sums the rates last reported by the node's RUNNING jobs.
	BytesPerSec float64
}

// JobStore keeps jobs and their history.
type JobStore interface {
	// CreateDownload inserts the image (state PENDING) and its job (state
	// QUEUED) in one transaction. When an active job for the same
	// (Source, PoolID) exists it inserts nothing and returns that job
	// with ErrConflict. An image at im.RelPath that a failed download left
	// (ERROR, no digest, no active job) is replaced, its jobs kept; any
	// other image there is ErrConflict.
	CreateDownload(ctx context.Context, im Image, j Job) (Job, error)
	// CreateJob inserts a job that works on an image already in the
	// library (a verify), QUEUED, under the same rule as CreateDownload:
	// when an active job for the same (Source, PoolID) exists it inserts
	// nothing and returns that job with ErrConflict. ErrNotFound when the
	// pool, or the image in that pool, does not exist.
	CreateJob(ctx context.Context, j Job) (Job, error)
	GetJob(ctx context.Context, id string) (Job, error)
	// ListJobs returns matching jobs, newest first (by CreatedAt, then ID).
	ListJobs(ctx context.Context, f JobFilter) ([]Job, error)
	// ListJobsPage returns one page of ListJobs and the token of the next
	// page ("" after the last).
	ListJobsPage(ctx context.Context, f JobFilter, p Page) ([]Job, string, error)
	// UpdateJob replaces every mutable field of the job with j.ID if its
	// fence is still j.Fence (or lower, when taking ownership: see
	// ClaimJob); ErrConflict when the fence moved on or the job has
	// finished (a finished job no longer changes). CancelRequested, once
	// stored true, stays true: a writer with an older copy of the job
	// cannot lose a cancel.
	UpdateJob(ctx context.Context, j Job) error
	// ClaimJob gives the job to nodeID with a fence one higher than the
	// stored one, state RUNNING, and returns the updated job; ErrConflict
	// when the job has finished.
	ClaimJob(ctx context.Context, id, nodeID string, at time.Time) (Job, error)
	// FinishJob sets the job's final state and message and, in the same
	// transaction, replaces the image, its path included (im.ID must be
	// the job's image) —
	// unless the fence moved on or the job had finished (ErrConflict);
	// ErrNotFound when the image is gone. The history messages are
	// appended to the job's history, at j.FinishedAt, in the same
	// transaction: whoever sees the job finished sees why. Either all
	// change or nothing does.
	FinishJob(ctx context.Context, j Job, im Image, history ...string) error
	// DiscardJob sets the job's final state and message, as FinishJob
	// does, and deletes the job's image in the same transaction (a
	// cancelled download or upload leaves no image behind); ErrNotFound
	// when the image is gone already. Either all change or nothing does.
	DiscardJob(ctx context.Context, j Job, history ...string) error
	AppendJobEvent(ctx context.Context, e JobEvent) error
	// ListJobEvents returns a job's history, oldest first: its last 1000
	// events.
	ListJobEvents(ctx context.Context, jobID string) ([]JobEvent, error)
	// CountRunningJobs returns, by node id, the RUNNING jobs each node owns:
	// how many and their summed rate. Nodes running none are absent.
	CountRunningJobs(ctx context.Context) (map[string]RunningJobs, error)
}
