package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

var _ store.JobStore = (*Store)(nil)

// activeStates lists the states store.JobState.Active accepts, as SQL. The
// partial unique index of migration 0004 spells the same list; the three
// must agree.
const activeStates = `('QUEUED', 'RUNNING')`

// maxJobEvents bounds ListJobEvents to a job's most recent history.
const maxJobEvents = 1000

const jobColumns = `id, kind, state, image_id, pool_id, source, url, checksum, checksum_url, node_id, fence,
	phase, bytes_done, bytes_total, bytes_per_sec, attempts, message, cancel_requested,
	created_at, updated_at, started_at, finished_at, failures_in_row, retry_since, next_attempt_at, owner, kind_from_content,
	max_bytes_per_second`

// jobSet assigns every mutable column: all but id, kind, image_id, pool_id,
// source, url, checksum, checksum_url and created_at. Its arguments come
// from jobSetArgs, in this order. A cancel, once requested, stays: a writer
// holding an older copy of the job cannot take it back.
const jobSet = `state = ?, node_id = ?, fence = ?, phase = ?, bytes_done = ?, bytes_total = ?, bytes_per_sec = ?,
	attempts = ?, message = ?, cancel_requested = CASE WHEN cancel_requested = 1 THEN 1 ELSE ? END, updated_at = ?, started_at = ?, finished_at = ?,
	failures_in_row = ?, retry_since = ?, next_attempt_at = ?`

func jobSetArgs(j store.Job) []any {
	return []any{string(j.State), j.NodeID, j.Fence, j.Phase, j.BytesDone, j.BytesTotal, j.BytesPerSec,
		int64(j.Attempts), j.Message, boolToDB(j.CancelRequested), micros(j.UpdatedAt), micros(j.StartedAt),
		micros(j.FinishedAt), int64(j.FailuresInRow), micros(j.RetrySince), micros(j.NextAttemptAt)}
}

func scanJob(r scanner) (store.Job, error) {
	var (
		j                                   store.Job
		state                               string
		attempts, inRow                     int64
		cancel                              int
		created, updated, started, finished int64
		retrySince, nextAttempt             int64
		fromContent                         int
	)
	var maxRate int64
	err := r.Scan(&j.ID, &j.Kind, &state, &j.ImageID, &j.PoolID, &j.Source, &j.URL, &j.Checksum, &j.ChecksumURL,
		&j.NodeID, &j.Fence, &j.Phase, &j.BytesDone, &j.BytesTotal, &j.BytesPerSec, &attempts, &j.Message,
		&cancel, &created, &updated, &started, &finished, &inRow, &retrySince, &nextAttempt, &j.Owner, &fromContent,
		&maxRate)
	j.MaxBytesPerSec = maxRate
	j.State, j.Attempts, j.CancelRequested = store.JobState(state), int(attempts), cancel != 0
	j.KindFromContent = fromContent != 0
	j.FailuresInRow, j.RetrySince, j.NextAttemptAt = int(inRow), fromMicros(retrySince), fromMicros(nextAttempt)
	j.CreatedAt, j.UpdatedAt = fromMicros(created), fromMicros(updated)
	j.StartedAt, j.FinishedAt = fromMicros(started), fromMicros(finished)
	return j, err
}

// queryRower is the store's database or a *txn.
type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// activeJob returns the active job for (source, poolID), or a zero Job when
// there is none.
func (s *Store) activeJob(ctx context.Context, q queryRower, source, poolID string) (store.Job, error) {
	j, err := scanJob(q.QueryRowContext(ctx, s.q(`SELECT `+jobColumns+` FROM jobs
		WHERE source = ? AND pool_id = ? AND state IN `+activeStates), source, poolID))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Job{}, nil
	}
	return j, err
}

// downloadRunning is the ErrConflict of CreateDownload naming the job that
// already does the work.
func downloadRunning(j store.Job, poolName string) error {
	return fmt.Errorf("a download of %s into pool %q is already running (job %s): %w",
		j.Source, poolName, j.ID, store.ErrConflict)
}

// CreateDownload inserts im and the job j that downloads it, in one
// transaction, unless an active job already downloads j.Source into the
// pool: then it returns that job with ErrConflict and inserts nothing.
//
// An empty im.State is PENDING and an empty j.State QUEUED; other states
// are refused, but for an upload (j.Kind "upload"), whose image is
// UPLOADING. An ERROR image without a digest at im.RelPath (a download
// that failed or was cancelled, no active job) is replaced; any other image
// there is a conflict. Empty j.Kind is "download"; empty j.ImageID and j.PoolID
// are taken from im (and an empty im.PoolID from j), and must agree with
// it. On success the job is returned as stored. ErrNotFound when the pool
// does not exist; ErrConflict without a job when the image's path or id,
// or the job's id, is taken.
func (s *Store) CreateDownload(ctx context.Context, im store.Image, j store.Job) (store.Job, error) {
	if j.Kind == "" {
		j.Kind = "download"
	}
	if im.State == "" {
		im.State = store.ImagePending
	}
	if j.State == "" {
		j.State = store.JobQueued
	}
	if j.ImageID == "" {
		j.ImageID = im.ID
	}
	if im.PoolID == "" {
		im.PoolID = j.PoolID
	}
	if j.PoolID == "" {
		j.PoolID = im.PoolID
	}
	switch {
	case im.ID == "":
		return store.Job{}, errors.New("create download: empty image id")
	case j.ID == "":
		return store.Job{}, errors.New("create download: empty job id")
	case j.Source == "":
		return store.Job{}, fmt.Errorf("create download: job %s has no source", j.ID)
	case im.State != store.ImagePending && !(j.Kind == "upload" && im.State == store.ImageUploading):
		return store.Job{}, fmt.Errorf("create download: image %s is %s, want %s", im.ID, im.State, store.ImagePending)
	case j.State != store.JobQueued:
		return store.Job{}, fmt.Errorf("create download: job %s is %s, want %s", j.ID, j.State, store.JobQueued)
	case j.ImageID != im.ID:
		return store.Job{}, fmt.Errorf("create download: job %s is for image %s, not %s", j.ID, j.ImageID, im.ID)
	case j.PoolID != im.PoolID:
		return store.Job{}, fmt.Errorf("create download: job %s is in pool %s but image %s in pool %s", j.ID, j.PoolID, im.ID, im.PoolID)
	}

	var (
		created, existing store.Job
		poolName          string
	)
	err := s.tx(ctx, func(t *txn) error {
		existing = store.Job{}
		var err error
		if poolName, err = t.poolName(ctx, j.PoolID); err != nil {
			return err
		}
		if existing, err = s.activeJob(ctx, t, j.Source, j.PoolID); err != nil {
			return err
		}
		if existing.ID != "" {
			return downloadRunning(existing, poolName)
		}
		if err := t.dropFailedDownload(ctx, im.PoolID, im.RelPath); err != nil {
			return err
		}
		if err := t.insertImage(ctx, poolName, im); err != nil {
			return err
		}
		if err := t.insertJob(ctx, poolName, j); err != nil {
			return err
		}
		created, err = scanJob(t.queryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, j.ID))
		return err
	})
	switch {
	case err == nil:
		return created, nil
	case existing.ID != "":
		return existing, err
	case errors.Is(err, store.ErrConflict) && poolName != "":
		// Where writers do not serialize (PostgreSQL), a concurrent
		// CreateDownload of the same source can commit between the check
		// and the inserts; the unique constraints then refused ours, and
		// the answer is the job that won.
		if w, werr := s.activeJob(ctx, s.db, j.Source, j.PoolID); werr == nil && w.ID != "" {
			return w, downloadRunning(w, poolName)
		}
	}
	return store.Job{}, err
}

// dropFailedDownload deletes the record at relPath in pool poolID if it is
// what a failed or cancelled download leaves: ERROR, no digest (so no file
// of its own was ever put in place), and no active job working on it. Its
// jobs keep their history.
func (t *txn) dropFailedDownload(ctx context.Context, poolID, relPath string) error {
	_, err := t.exec(ctx, `DELETE FROM images WHERE pool_id = ? AND rel_path = ? AND state = ? AND sha256 = ''
		AND id NOT IN (SELECT image_id FROM jobs WHERE state IN `+activeStates+`)`,
		poolID, relPath, string(store.ImageError))
	return err
}

// insertJob inserts j into pool j.PoolID, called poolName, which the
// transaction has seen exist.
func (t *txn) insertJob(ctx context.Context, poolName string, j store.Job) error {
	// Looked up first so the error can say what collided; the primary
	// key remains the guarantee.
	taken, err := t.exists(ctx, `SELECT 1 FROM jobs WHERE id = ?`, j.ID)
	if err != nil {
		return err
	}
	if taken {
		return fmt.Errorf("job id %s is taken: %w", j.ID, store.ErrConflict)
	}
	args := append([]any{j.ID, j.Kind, j.ImageID, j.PoolID, j.Source, j.URL, j.Checksum, j.ChecksumURL,
		micros(j.CreatedAt), j.Owner, boolToDB(j.KindFromContent), j.MaxBytesPerSec}, jobSetArgs(j)...)
	_, err = t.exec(ctx, `INSERT INTO jobs (id, kind, image_id, pool_id, source, url, checksum, checksum_url, created_at, owner,
		kind_from_content, max_bytes_per_second, state, node_id, fence, phase, bytes_done, bytes_total, bytes_per_sec, attempts, message,
		cancel_requested, updated_at, started_at, finished_at, failures_in_row, retry_since, next_attempt_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
	switch {
	case t.s.isUnique(err):
		// Only when a concurrent transaction got there after the checks.
		return fmt.Errorf("job id %s is taken, or a download of %s into pool %q is already running: %w",
			j.ID, j.Source, poolName, store.ErrConflict)
	case t.s.isForeignKey(err):
		return fmt.Errorf("pool %s: %w", j.PoolID, store.ErrNotFound)
	}
	return err
}

// GetJob returns the job with id.
func (s *Store) GetJob(ctx context.Context, id string) (store.Job, error) {
	j, err := scanJob(s.db.QueryRowContext(ctx, s.q(`SELECT `+jobColumns+` FROM jobs WHERE id = ?`), id))
	return j, notFound(err, "job "+id)
}

// ListJobs returns the jobs matching f, newest first; jobs created in the
// same microsecond are ordered by id, descending.
func (s *Store) ListJobs(ctx context.Context, f store.JobFilter) ([]store.Job, error) {
	w := jobWhere(f)
	return queryAll(ctx, s.db, s.q(`SELECT `+jobColumns+` FROM jobs`+w.sql()+` ORDER BY created_at DESC, id DESC`), w.args, scanJob)
}

// jobPages pages jobs in ListJobs's order, newest first: (created_at, id)
// descending, which no job ever changes; served by the indexes of
// migrations 0004 and 0011.
var jobPages = keyset[store.Job]{
	list: "jobs", cols: `(created_at, id)`, desc: true, strings: 1, ints: 1,
	args: func(c store.Cursor) []any { return []any{c.Ints[0], c.Strings[0]} },
	cursor: func(j store.Job) store.Cursor {
		return store.Cursor{Ints: []int64{micros(j.CreatedAt)}, Strings: []string{j.ID}}
	},
}

// ListJobsPage returns one page of the jobs matching f, newest first.
func (s *Store) ListJobsPage(ctx context.Context, f store.JobFilter, p store.Page) ([]store.Job, string, error) {
	return page(ctx, s, jobPages, `SELECT `+jobColumns+` FROM jobs`, jobWhere(f), f, p, scanJob)
}

func jobWhere(f store.JobFilter) where {
	var w where
	if len(f.States) > 0 {
		marks := make([]string, len(f.States))
		args := make([]any, len(f.States))
		for i, st := range f.States {
			marks[i], args[i] = "?", string(st)
		}
		w.add(`state IN (`+strings.Join(marks, ", ")+`)`, args...)
	}
	if f.PoolID != "" {
		w.add(`pool_id = ?`, f.PoolID)
	}
	if f.NodeID != "" {
		w.add(`node_id = ?`, f.NodeID)
	}
	if f.Kind != "" {
		w.add(`kind = ?`, f.Kind)
	}
	if f.ImageID != "" {
		w.add(`image_id = ?`, f.ImageID)
	}
	return w
}

// UpdateJob replaces every mutable field of job j.ID (not ID, Kind,
// ImageID, PoolID, Source, URL, Checksum, ChecksumURL, CreatedAt), fence
// included, if the stored fence is at most j.Fence and the job is still
// active. ErrNotFound when there is no such job; ErrConflict when the fence
// moved past j.Fence (another owner took the job) or the job has finished.
func (s *Store) UpdateJob(ctx context.Context, j store.Job) error {
	return s.tx(ctx, func(t *txn) error {
		return t.updateJob(ctx, j, "")
	})
}

// updateJob is the conditional replacement of UpdateJob and FinishJob;
// imageID, when not empty, must be the job's image.
func (t *txn) updateJob(ctx context.Context, j store.Job, imageID string) error {
	query := `UPDATE jobs SET ` + jobSet + ` WHERE id = ? AND fence <= ? AND state IN ` + activeStates
	args := append(jobSetArgs(j), j.ID, j.Fence)
	if imageID != "" {
		query += ` AND image_id = ?`
		args = append(args, imageID)
	}
	res, err := t.exec(ctx, query, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil || n > 0 {
		return err
	}
	return t.jobRefused(ctx, j, imageID)
}

// jobRefused explains why the conditional update of j changed nothing.
func (t *txn) jobRefused(ctx context.Context, j store.Job, imageID string) error {
	var (
		fence        int64
		state, image string
	)
	err := t.queryRow(ctx, `SELECT fence, state, image_id FROM jobs WHERE id = ?`, j.ID).Scan(&fence, &state, &image)
	switch {
	case err != nil:
		return notFound(err, "job "+j.ID)
	case fence > j.Fence:
		return fmt.Errorf("job %s was taken over (fence %d > %d): %w", j.ID, fence, j.Fence, store.ErrConflict)
	case !store.JobState(state).Active():
		return fmt.Errorf("job %s has already finished (%s): %w", j.ID, state, store.ErrConflict)
	case imageID != "" && image != imageID:
		return fmt.Errorf("job %s is for image %s, not %s", j.ID, image, imageID)
	}
	return fmt.Errorf("job %s changed meanwhile: %w", j.ID, store.ErrConflict)
}

// ClaimJob gives active job id to nodeID: fence one higher than the stored
// one, state RUNNING, StartedAt at unless it was set, UpdatedAt at. It
// returns the job as claimed. ErrNotFound when there is no such job;
// ErrConflict when it has finished. Attempts is left to the caller.
func (s *Store) ClaimJob(ctx context.Context, id, nodeID string, at time.Time) (store.Job, error) {
	if nodeID == "" {
		return store.Job{}, fmt.Errorf("claim job %s: empty node id", id)
	}
	var j store.Job
	err := s.tx(ctx, func(t *txn) error {
		// One conditional UPDATE is the claim, so concurrent claims each
		// get a fence of their own and the last one owns the job.
		res, err := t.exec(ctx, `UPDATE jobs SET fence = fence + 1, node_id = ?, state = ?,
			started_at = CASE WHEN started_at = 0 THEN ? ELSE started_at END, updated_at = ?
			WHERE id = ? AND state IN `+activeStates,
			nodeID, string(store.JobRunning), micros(at), micros(at), id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			var state string
			if err := t.queryRow(ctx, `SELECT state FROM jobs WHERE id = ?`, id).Scan(&state); err != nil {
				return notFound(err, "job "+id)
			}
			return fmt.Errorf("job %s has already finished (%s) and cannot be claimed: %w", id, state, store.ErrConflict)
		}
		// Read inside the transaction, which holds the row since the
		// UPDATE, so this is the claim just made and not a later one.
		j, err = scanJob(t.queryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
		return err
	})
	if err != nil {
		return store.Job{}, err
	}
	return j, nil
}

// FinishJob does what UpdateJob does, for a final j.State only, and in the
// same transaction replaces every mutable field of image im.ID as
// UpdateImage does, and its path: an upload whose content decides its
// directory ends where its node put it. im.ID must be the job's image. Either both change or
// neither: ErrConflict when the fence moved past j.Fence or the job had
// finished already, ErrNotFound when the job or the image is gone.
func (s *Store) FinishJob(ctx context.Context, j store.Job, im store.Image, history ...string) error {
	return s.endJob(ctx, "finish", j, im.ID, history, func(t *txn) (sql.Result, error) {
		return t.exec(ctx, `UPDATE images SET `+imageSet+`, rel_path = ? WHERE id = ?`, append(imageSetArgs(im), im.RelPath, im.ID)...)
	})
}

// DiscardJob ends job j, as FinishJob does, and deletes its image in the
// same transaction: whoever sees a cancelled download or upload finished
// no longer finds its image. ErrNotFound when the image is gone already.
func (s *Store) DiscardJob(ctx context.Context, j store.Job, history ...string) error {
	return s.endJob(ctx, "discard", j, j.ImageID, history, func(t *txn) (sql.Result, error) {
		return t.exec(ctx, `DELETE FROM images WHERE id = ?`, j.ImageID)
	})
}

// endJob ends job j with its final state (op names the caller in errors)
// and, in the same transaction, changes its image imageID with change and
// appends the history messages at j.FinishedAt.
func (s *Store) endJob(ctx context.Context, op string, j store.Job, imageID string, history []string, change func(t *txn) (sql.Result, error)) error {
	if j.State.Active() || j.State == "" {
		return fmt.Errorf("%s job %s: state %q is not final (SUCCEEDED, FAILED or CANCELLED)", op, j.ID, j.State)
	}
	if imageID == "" {
		return fmt.Errorf("%s job %s: empty image id", op, j.ID)
	}
	return s.tx(ctx, func(t *txn) error {
		if err := t.updateJob(ctx, j, imageID); err != nil {
			return err
		}
		res, err := change(t)
		if err != nil {
			return err
		}
		if err := mustAffect(res, fmt.Sprintf("image %s of job %s", imageID, j.ID)); err != nil {
			return err
		}
		for _, msg := range history {
			if _, err := t.exec(ctx, `INSERT INTO job_events (job_id, time, message) VALUES (?, ?, ?)`, j.ID, micros(j.FinishedAt), msg); err != nil {
				return err
			}
		}
		return nil
	})
}

// AppendJobEvent adds e to the history of job e.JobID; ErrNotFound when the
// job does not exist.
func (s *Store) AppendJobEvent(ctx context.Context, e store.JobEvent) error {
	if e.JobID == "" {
		return errors.New("append job event: empty job id")
	}
	_, err := s.exec(ctx, `INSERT INTO job_events (job_id, time, message) VALUES (?, ?, ?)`,
		e.JobID, micros(e.Time), e.Message)
	if s.isForeignKey(err) {
		return fmt.Errorf("job %s: %w", e.JobID, store.ErrNotFound)
	}
	return err
}

// ListJobEvents returns the last 1000 events of job jobID in the order
// they were appended; ErrNotFound when the job does not exist.
func (s *Store) ListJobEvents(ctx context.Context, jobID string) ([]store.JobEvent, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT time, message FROM
		(SELECT id, time, message FROM job_events WHERE job_id = ? ORDER BY id DESC LIMIT ?) recent
		ORDER BY id`), jobID, maxJobEvents)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.JobEvent
	for rows.Next() {
		var (
			e  store.JobEvent
			at int64
		)
		if err := rows.Scan(&at, &e.Message); err != nil {
			return nil, err
		}
		e.JobID, e.Time = jobID, fromMicros(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		// Told apart only when empty: a job with events exists.
		var one int
		err := s.db.QueryRowContext(ctx, s.q(`SELECT 1 FROM jobs WHERE id = ?`), jobID).Scan(&one)
		if err != nil {
			return nil, notFound(err, "job "+jobID)
		}
	}
	return out, nil
}

// CountRunningJobs counts the RUNNING jobs of every node that owns one and
// sums their last reported rates.
func (s *Store) CountRunningJobs(ctx context.Context) (map[string]store.RunningJobs, error) {
	type row struct {
		node string
		jobs store.RunningJobs
	}
	rows, err := queryAll(ctx, s.db, s.q(`SELECT node_id, COUNT(*), COALESCE(SUM(bytes_per_sec), 0) FROM jobs
		WHERE state = ? AND node_id <> '' GROUP BY node_id`), []any{string(store.JobRunning)},
		func(r scanner) (row, error) {
			var (
				v     row
				count int64
			)
			err := r.Scan(&v.node, &count, &v.jobs.BytesPerSec)
			v.jobs.Count = int(count)
			return v, err
		})
	if err != nil {
		return nil, err
	}
	out := make(map[string]store.RunningJobs, len(rows))
	for _, r := range rows {
		out[r.node] = r.jobs
	}
	return out, nil
}
