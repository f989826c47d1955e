//go:build linux

// Package dirwatch reports, in real time, ISO files that were completely
// written into or removed from a directory tree. It uses inotify directly
// because only IN_CLOSE_WRITE says "the writer closed the file": a file is
// reported once its writes are done (or once it is renamed or linked into
// place: a hard or symbolic link is complete when it appears), never while
// it is still being copied, however slowly. Writes made by
// other hosts on a shared filesystem raise no events; periodic scans cover
// those.
package dirwatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Op is what happened to a file.
type Op int

const (
	// Settled: the file was closed after writing, or moved or linked into
	// the tree.
	Settled Op = iota + 1
	// Removed: the file was deleted or moved out.
	Removed
	// Overflow: events were lost; the whole tree must be rescanned.
	Overflow
	// Writing: the file was created or written to and is not closed yet.
	// Sent on every write; receivers keep the latest state per file.
	Writing
)

func (o Op) String() string {
	switch o {
	case Settled:
		return "settled"
	case Removed:
		return "removed"
	case Overflow:
		return "overflow"
	case Writing:
		return "writing"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Event names a file relative to the watched root, slash-separated.
type Event struct {
	Op      Op
	RelPath string
}

const mask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE |
	unix.IN_CREATE | unix.IN_MODIFY | unix.IN_DELETE_SELF | unix.IN_EXCL_UNLINK

// Watcher watches one directory tree.
type Watcher struct {
	root  string
	match func(name string) bool
	file  *os.File
	fd    int

	mu   sync.Mutex
	dirs map[int]string // watch descriptor → directory relative to root
}

// New watches the tree under root (which must exist) for files whose base
// name satisfies match. Call Run to receive events and Close to stop.
func New(root string, match func(name string) bool) (*Watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	w := &Watcher{root: root, match: match, fd: fd, dirs: map[int]string{},
		// A non-blocking descriptor goes through Go's poller, so Close
		// unblocks a pending Read.
		file: os.NewFile(uintptr(fd), "inotify")}
	if _, err := w.addTree("."); err != nil {
		w.file.Close()
		return nil, err
	}
	return w, nil
}

// Close stops the watcher; Run returns.
func (w *Watcher) Close() error { return w.file.Close() }

// addTree watches dir (relative to root) and every directory below it, and
// returns the matching files already there: a directory moved in whole
// brings its files without one event per file.
func (w *Watcher) addTree(dir string) ([]string, error) {
	var found []string
	err := filepath.WalkDir(filepath.Join(w.root, dir), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == filepath.Join(w.root, dir) {
				return err
			}
			return nil
		}
		rel, _ := filepath.Rel(w.root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && strings.HasPrefix(d.Name(), ".") {
				return fs.SkipDir
			}
			wd, err := unix.InotifyAddWatch(w.fd, p, mask)
			if err != nil {
				return fmt.Errorf("watching %s: %w", p, err)
			}
			w.mu.Lock()
			w.dirs[wd] = rel
			w.mu.Unlock()
			return nil
		}
		if d.Type().IsRegular() && w.match(d.Name()) {
			found = append(found, rel)
		}
		return nil
	})
	return found, err
}

// Run delivers events until ctx is done or the watcher is closed.
func (w *Watcher) Run(ctx context.Context, events chan<- Event) error {
	stop := context.AfterFunc(ctx, func() { w.file.Close() })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("reading inotify events: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			name := strings.TrimRight(string(nameBytes), "\x00")
			for _, e := range w.translate(ev.Wd, ev.Mask, name) {
				select {
				case events <- e:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
	}
}

// linked reports whether the file just created at rel is a link to a file
// that already existed: a symbolic link, or a hard link (more than one
// name). Nobody opened such a file to write it, so no close will follow:
// it is complete as it appears. Where a symlink leads is the scanner's
// business (it follows links only inside the pool).
func (w *Watcher) linked(rel string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(w.root, filepath.FromSlash(rel)), &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFLNK || (st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1)
}

// translate turns one inotify event into the events callers care about,
// watching new directories as they appear.
func (w *Watcher) translate(wd int32, m uint32, name string) []Event {
	if m&unix.IN_Q_OVERFLOW != 0 {
		return []Event{{Op: Overflow}}
	}
	w.mu.Lock()
	dir, ok := w.dirs[int(wd)]
	if m&(unix.IN_DELETE_SELF|unix.IN_IGNORED) != 0 {
		delete(w.dirs, int(wd))
	}
	w.mu.Unlock()
	if !ok || name == "" {
		return nil
	}
	rel := path.Join(dir, name)
	if m&unix.IN_ISDIR != 0 {
		if m&(unix.IN_CREATE|unix.IN_MOVED_TO) == 0 || strings.HasPrefix(name, ".") {
			// A directory moved out or deleted: its files are gone, but
			// names are unknown here; a rescan settles it.
			if m&(unix.IN_MOVED_FROM|unix.IN_DELETE) != 0 {
				return []Event{{Op: Overflow}}
			}
			return nil
		}
		found, err := w.addTree(rel)
		if err != nil {
			return []Event{{Op: Overflow}}
		}
		var evs []Event
		for _, f := range found {
			evs = append(evs, Event{Op: Settled, RelPath: f})
		}
		return evs
	}
	if !w.match(name) {
		return nil
	}
	switch {
	case m&(unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO) != 0:
		return []Event{{Op: Settled, RelPath: rel}}
	case m&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
		return []Event{{Op: Removed, RelPath: rel}}
	case m&unix.IN_CREATE != 0 && w.linked(rel):
		return []Event{{Op: Settled, RelPath: rel}}
	case m&(unix.IN_CREATE|unix.IN_MODIFY) != 0:
		return []Event{{Op: Writing, RelPath: rel}}
	}
	return nil
}
