package ingest

import (
	"time"

	"github.com/quarry-project/quarry/internal/bytesize"
	"github.com/quarry-project/quarry/internal/errclass"
)

// Error classes, matched with errors.Is; they are errclass's classes
// under the names this package's callers know. Every error Download
// returns that matches ErrTerminal failed for a reason retrying will not
// fix; the partial file is gone. ErrNoSpace, ErrChecksum, ErrExists, and
// policy refusals (errclass.PolicyRefused, with urlpolicy.ErrRefused in
// the chain) are terminal. ErrFenced is not: the job is fine, but another
// writer owns it. Other errors (not a context error) are
// errclass.Transient: the partial file and checkpoint are kept, and
// calling Download again resumes.
var (
	ErrTerminal = errclass.Terminal
	ErrNoSpace  = errclass.NoSpace
	ErrChecksum = errclass.ChecksumMismatch
	ErrExists   = errclass.Conflict
	ErrFenced   = errclass.Fenced
)

// transientError is a failure of one attempt that a retry may fix.
type transientError struct {
	msg        string
	cause      error
	retryAfter time.Duration // what the origin asked us to wait; 0: nothing
}

func (e *transientError) Error() string { return e.msg }

// Unwrap gives the class, then the underlying error, if any.
func (e *transientError) Unwrap() []error {
	if e.cause == nil {
		return []error{errclass.Transient}
	}
	return []error{errclass.Transient, e.cause}
}

// size formats a byte count for people: "512 B", "3.0 MiB", "1.2 GiB".
func size(n int64) string { return bytesize.Format(uint64(max(n, 0))) }

// shorten clips a value quoted in a message.
func shorten(s string) string {
	if len(s) > 140 {
		return s[:140] + "…"
	}
	return s
}
