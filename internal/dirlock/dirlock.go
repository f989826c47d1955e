// Package dirlock keeps two processes off one data directory: a process
// holds an exclusive flock(2) on a lock file in the directory for as long as
// it runs, with its pid and its role written in the file, and a second
// process that asks for the same directory is refused at once with whose it
// is. The kernel drops the lock when the holder exits, however it exits, so
// a crash leaves nothing to clean up.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/quarry-project/quarry/internal/errclass"
)

// FileName is the lock file in a locked directory.
const FileName = "quarry.lock"

// ErrInUse: another process holds the directory.
var ErrInUse = errclass.New(errclass.FailedPrecondition, "data directory in use")

// Lock is a held directory lock.
type Lock struct {
	f *os.File
}

// Acquire locks dir (which must exist) for the calling process, whose role
// ("quarry server", "quarry agent") the refusal of a second one names. It
// never waits: a directory held by another process is an ErrInUse error
// that names the holder and says what to do.
func Acquire(dir, role string) (*Lock, error) {
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file of the data directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := readHolder(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errclass.Wrap(ErrInUse, err, "data directory %s is in use by %s; stop it or pass another --data-dir", dir, holder)
		}
		return nil, fmt.Errorf("locking the data directory %s: %w", dir, err)
	}
	// Ours now: say whose it is, for the next one to ask.
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(fmt.Sprintf("%d %s\n", os.Getpid(), role)), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the lock file of the data directory: %w", err)
	}
	return &Lock{f: f}, nil
}

// readHolder describes the process named in a lock file: "quarry server
// (pid 123)", or "another process" when the file does not say.
func readHolder(f *os.File) string {
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, 0)
	pid, role, ok := strings.Cut(strings.TrimSpace(string(buf[:n])), " ")
	if _, err := strconv.Atoi(pid); !ok || err != nil || role == "" {
		return "another process"
	}
	return fmt.Sprintf("%s (pid %s)", role, pid)
}

// Release unlocks the directory. The lock file stays: removing it would
// let a process that opened it just before lock a file nobody else sees.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
