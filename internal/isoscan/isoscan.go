// Package isoscan lists the ISO files of a pool directory with their
// identity (size, modification time, ISO 9660 volume label, boot record),
// and the files under images/ with their size, modification time and
// format header.
// It is the agent's half of ISO discovery: it reads, never writes, and
// stays inside the pool root (os.Root), so a symlink cannot lead it
// elsewhere. Labels are cached by (path, size, mtime), so a rescan of an
// unchanged tree costs little more than stat calls.
package isoscan

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/isofs"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// File is one ISO found in a pool.
type File struct {
	// RelPath is relative to the pool root, slash-separated ("iso/a/b.iso").
	RelPath  string
	Size     int64
	ModTime  time.Time
	Label    string
	Bootable bool
	// Problem says why the file's label could not be read (not an ISO 9660
	// image, unreadable); the file is still listed.
	Problem string
	// Format is the format the header of a file under images/ says (see
	// ScanImages); empty for ISOs, whose label identifies them.
	Format string
}

// Scanner lists ISOs and remembers labels between scans.
type Scanner struct {
	mu      sync.Mutex
	cache   map[cacheKey]isofs.Info
	formats map[cacheKey]string // of files under images/
}

type cacheKey struct {
	root, rel string
	size      int64
	mtime     int64
}

// New returns a Scanner with an empty cache.
func New() *Scanner {
	return &Scanner{cache: map[cacheKey]isofs.Info{}, formats: map[cacheKey]string{}}
}

// Scan lists every regular file ending in .iso (any case) under iso/ of the
// pool at dir, at any depth, skipping hidden files and directories (copies
// in progress by rsync and friends). progress, if set, is called with the
// number of files seen so far.
func (s *Scanner) Scan(ctx context.Context, dir string, progress func(seen int)) ([]File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if _, err := root.Stat(poolfs.ISODir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil // a pool without iso/ simply has no ISOs
	}
	var files []File
	seen := map[cacheKey]bool{}
	err = fs.WalkDir(root.FS(), poolfs.ISODir, func(p string, d fs.DirEntry, err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if err != nil {
			if p == poolfs.ISODir {
				return err
			}
			return nil // an unreadable subdirectory hides only itself
		}
		name := d.Name()
		if p != poolfs.ISODir && poolfs.Hidden(name) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || !poolfs.IsISOName(name) {
			return nil
		}
		fi, err := root.Stat(p) // follows a symlink, but only inside the root
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		f := File{RelPath: p, Size: fi.Size(), ModTime: fi.ModTime().UTC()}
		key := cacheKey{dir, p, fi.Size(), fi.ModTime().UnixNano()}
		info, err := s.label(root, p, key)
		if err != nil {
			f.Problem = err.Error()
		}
		f.Label, f.Bootable = info.Label, info.Bootable
		seen[key] = true
		files = append(files, f)
		if progress != nil {
			progress(len(files))
		}
		return nil
	})
	s.forget(dir, seen)
	return files, err
}

// label reads the volume descriptors of the file, or returns them from
// the cache when the file is unchanged.
func (s *Scanner) label(root *os.Root, rel string, key cacheKey) (isofs.Info, error) {
	s.mu.Lock()
	info, ok := s.cache[key]
	s.mu.Unlock()
	if ok {
		return info, nil
	}
	f, err := root.Open(rel)
	if err != nil {
		return isofs.Info{}, err
	}
	defer f.Close()
	info, err = isofs.Read(f)
	if errors.Is(err, isofs.ErrNotISO) {
		err = errors.New("not an ISO 9660 image (no volume label)")
	}
	if err != nil {
		return isofs.Info{}, err
	}
	s.mu.Lock()
	s.cache[key] = info
	s.mu.Unlock()
	return info, nil
}

// forget drops cached labels of files under dir that the last scan did
// not see, so the cache does not grow without bound.
func (s *Scanner) forget(dir string, seen map[cacheKey]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.cache {
		if k.root == dir && !seen[k] {
			delete(s.cache, k)
		}
	}
}

// File returns what Scan would list for the one ISO at rel in the pool
// root: a file Quarry itself just put there (an upload) is described by
// the same code as the ISOs discovery finds.
func (s *Scanner) File(root *os.Root, dir, rel string) (File, error) {
	fi, err := root.Stat(rel)
	if err != nil {
		return File{}, err
	}
	f := File{RelPath: rel, Size: fi.Size(), ModTime: fi.ModTime().UTC()}
	info, err := s.label(root, rel, cacheKey{dir, rel, fi.Size(), fi.ModTime().UnixNano()})
	if err != nil {
		f.Problem = err.Error()
	}
	f.Label, f.Bootable = info.Label, info.Bootable
	return f, nil
}
