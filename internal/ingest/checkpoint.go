package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/quarry-project/quarry/internal/atomicfile"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// A job's files in poolfs.PartialDir are named after it: <job> (the
// partial file), <job>.ckpt (the checkpoint), <job>.owner (the fence of
// the writer that claimed it last), and .<job>.*.tmp-* while one of these
// is replaced (atomicfile's temporary files, one per writer). Job ids hold
// no dots, so no job's files can be another's.
func partialPath(job string) string    { return path.Join(poolfs.PartialDir, job) }
func checkpointPath(job string) string { return path.Join(poolfs.PartialDir, job+".ckpt") }
func ownerPath(job string) string      { return path.Join(poolfs.PartialDir, job+".owner") }

// ownFile reports whether name, a file of poolfs.PartialDir, belongs to job.
func ownFile(name, job string) bool {
	return name == job || strings.HasPrefix(name, job+".") || strings.HasPrefix(name, "."+job+".")
}

// checkpoint is what a restarted download needs to go on where the last
// one stopped: the first Offset bytes of the partial file are durable and
// the hash states cover exactly them.
type checkpoint struct {
	Version   int    `json:"version"`
	Job       string `json:"job"`
	URL       string `json:"url"`
	Validator string `json:"validator"` // strong ETag or Last-Modified: the If-Range value
	Total     int64  `json:"total"`     // -1: unknown
	Offset    int64  `json:"offset"`
	Fence     uint64 `json:"fence"`
	SHA256    []byte `json:"sha256_state"` // encoding.BinaryMarshaler output
	SHA512    []byte `json:"sha512_state,omitempty"`
	// Fresh says this is the one download from zero after a checksum
	// mismatch: another mismatch is final, also after a restart.
	Fresh   bool      `json:"fresh,omitempty"`
	Written time.Time `json:"written"`
	// Segments of a segmented download that are not hashed yet, in file
	// order: the first Done bytes of each are durable, and Offset is where
	// the hash states stop. A writer that does not read them resumes from
	// Offset, which is also right.
	Segments []segment `json:"segments,omitempty"`
}

const checkpointVersion = 1

// readCheckpoint returns the job's checkpoint, or nil if there is none or
// it cannot be read as one (then nothing is resumed).
func readCheckpoint(root *os.Root, job string) (*checkpoint, error) {
	b, err := root.ReadFile(checkpointPath(job))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ck checkpoint
	if json.Unmarshal(b, &ck) != nil || ck.Version != checkpointVersion || ck.Job != job {
		return nil, nil
	}
	return &ck, nil
}

// writeCheckpoint replaces the job's checkpoint atomically and durably:
// a crash leaves the old one or the new one, never a torn file.
func writeCheckpoint(root *os.Root, ck *checkpoint) error {
	ck.Version = checkpointVersion
	b, err := json.Marshal(ck)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(root, checkpointPath(ck.Job), b, 0o600)
}

// dropOrphanCheckpoint removes the checkpoint that the writer with fence
// wrote for job if the job's partial file is gone: another writer
// finished or discarded the job, and nobody will resume from it.
func dropOrphanCheckpoint(root *os.Root, job string, fence uint64) error {
	if _, err := root.Stat(partialPath(job)); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	ck, err := readCheckpoint(root, job)
	if err != nil || ck == nil || ck.Fence != fence {
		return err
	}
	if err := root.Remove(checkpointPath(job)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// testHookCheckpoint runs between a writer's ownership check and its
// checkpoint write; tests pause a writer there.
var testHookCheckpoint = func() {}

// claim records fence as the job's owner. Only a writer taking the job
// writes the owner file; checkpoints leave it alone, so a checkpoint that
// a writer which lost the job wrote late cannot hide the takeover.
func claim(root *os.Root, job string, fence uint64) error {
	return atomicfile.WriteFile(root, ownerPath(job), strconv.AppendUint(nil, fence, 10), 0o600)
}

// ownerFence returns the highest fence that claimed the job or wrote its
// checkpoint, 0 if none did.
func ownerFence(root *os.Root, job string) (uint64, error) {
	var owner uint64
	b, err := root.ReadFile(ownerPath(job))
	switch {
	case err == nil:
		if owner, err = strconv.ParseUint(string(b), 10, 64); err != nil {
			return 0, fmt.Errorf("the owner file of job %s holds %q, not a fence", job, shorten(string(b)))
		}
	case !errors.Is(err, fs.ErrNotExist):
		return 0, err
	}
	ck, err := readCheckpoint(root, job)
	if err != nil {
		return 0, err
	}
	if ck != nil {
		owner = max(owner, ck.Fence)
	}
	return owner, nil
}

// checkFence fails with ErrFenced when a writer with a higher fence has
// claimed the job since: this writer must stop and leave its files alone.
func checkFence(root *os.Root, job string, fence uint64) error {
	owner, err := ownerFence(root, job)
	if err != nil {
		return fmt.Errorf("reading the owner of job %s: %w", job, err)
	}
	if owner > fence {
		return errclass.New(errclass.Fenced, "job %s was taken over by a writer with fence %d (this one has %d); this writer stops and leaves the partial file to it", job, owner, fence)
	}
	return nil
}

// Discard removes the partial file and checkpoint of a job, whoever owns
// it: the clean-up after an explicit cancel. A job with nothing on disk is
// not an error. The partial file goes first: a writer still at work that
// fails on one of the job's files Discard removes then finds its partial
// file gone, and so that it lost the job, rather than a failure of its own.
func Discard(root *os.Root, job string) error {
	if err := checkJob(job); err != nil {
		return err
	}
	if err := root.Remove(partialPath(job)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	entries, err := fs.ReadDir(root.FS(), poolfs.PartialDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !ownFile(e.Name(), job) {
			continue
		}
		if err := root.Remove(path.Join(poolfs.PartialDir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkJob accepts job ids that make safe file names: letters, digits, -
// and _, up to 128. No dots, so no job's partial file can be another's
// checkpoint.
func checkJob(job string) error {
	ok := job != "" && len(job) <= 128
	for _, c := range job {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			ok = false
		}
	}
	if !ok {
		return errclass.New(errclass.InvalidArgument, "job id %q is not valid: use 1 to 128 letters, digits, - or _", shorten(job))
	}
	return nil
}
