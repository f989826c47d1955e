// Package atomicfile writes small files (keys, certificates, tokens) so
// that a reader, or the next start after a crash, sees the old content or
// the new, never a part: a synced temporary file in the same directory is
// renamed into place and the directory is synced.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Pending is a file written and synced but not yet in place.
type Pending struct {
	tmp, path string
}

// Prepare writes data with mode perm to a temporary file beside path.
func Prepare(path string, data []byte, perm os.FileMode) (*Pending, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	p := &Pending{tmp: f.Name(), path: path}
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		p.Abort()
		return nil, err
	}
	return p, nil
}

// Commit moves the file into place and makes the move durable.
func (p *Pending) Commit() error {
	if err := os.Rename(p.tmp, p.path); err != nil {
		p.Abort()
		return err
	}
	d, err := os.Open(filepath.Dir(p.path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Abort removes the temporary file.
func (p *Pending) Abort() { os.Remove(p.tmp) }

// Write writes data to path atomically with mode perm.
func Write(path string, data []byte, perm os.FileMode) error {
	p, err := Prepare(path, data, perm)
	if err != nil {
		return err
	}
	return p.Commit()
}
