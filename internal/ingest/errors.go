package ingest

import (
	"errors"
	"fmt"
	"time"
)

// Error classes, matched with errors.Is. Every error Download returns that
// matches ErrTerminal failed for a reason retrying will not fix; the
// partial file is gone. ErrNoSpace, ErrChecksum and ErrExists are
// terminal. ErrFenced is not: the job is fine, but another writer owns it.
// Errors matching none of them (and not a context error) are transient:
// the partial file and checkpoint are kept, and calling Download again
// resumes.
var (
	ErrTerminal = errors.New("download failed for good")
	ErrNoSpace  = errors.New("not enough space in the pool")
	ErrChecksum = errors.New("checksum mismatch")
	ErrExists   = errors.New("destination already exists with other content")
	ErrFenced   = errors.New("the job is owned by another writer")
)

// classError is an error whose message is meant for the operator and says what
// to do; its classes decide what the caller does with it.
type classError struct {
	classes []error
	msg     string
	cause   error // for errors.Is/As on the underlying error (urlpolicy, syscall)
}

func (e *classError) Error() string { return e.msg }

// Is matches the error's classes.
func (e *classError) Is(target error) bool {
	for _, c := range e.classes {
		if c == target {
			return true
		}
	}
	return false
}

// Unwrap returns the underlying error, if any.
func (e *classError) Unwrap() error { return e.cause }

func terminal(cause error, format string, args ...any) error {
	return &classError{classes: []error{ErrTerminal}, msg: fmt.Sprintf(format, args...), cause: cause}
}

func noSpace(cause error, format string, args ...any) error {
	return &classError{classes: []error{ErrNoSpace, ErrTerminal}, msg: fmt.Sprintf(format, args...), cause: cause}
}

func checksumMismatch(format string, args ...any) error {
	return &classError{classes: []error{ErrChecksum, ErrTerminal}, msg: fmt.Sprintf(format, args...)}
}

func exists(format string, args ...any) error {
	return &classError{classes: []error{ErrExists, ErrTerminal}, msg: fmt.Sprintf(format, args...)}
}

func fenced(format string, args ...any) error {
	return &classError{classes: []error{ErrFenced}, msg: fmt.Sprintf(format, args...)}
}

// transientError is a failure of one attempt that a retry may fix.
type transientError struct {
	msg        string
	cause      error
	retryAfter time.Duration // what the origin asked us to wait; 0: nothing
}

func (e *transientError) Error() string { return e.msg }
func (e *transientError) Unwrap() error { return e.cause }

// size formats a byte count for people: "512 B", "3.0 MiB", "1.2 GiB".
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// shorten clips a value quoted in a message.
func shorten(s string) string {
	if len(s) > 140 {
		return s[:140] + "…"
	}
	return s
}
