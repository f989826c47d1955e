// Package atomicfile is Quarry's one way to write a file durably: a
// reader, or the next start after a crash, sees the old content or the
// new, never a part. The data goes to a temporary file in the same
// directory, which is fsynced, then moved into place (rename, or link when
// an existing file must not be replaced), and the directory is fsynced.
//
// Files are named relative to an *os.Root, so a name cannot lead outside
// the directory the caller opened. Temporary files are named
// ".<base>.tmp-<random>": hidden from listings, never shared by two
// writers, and recognizable by the prefix "."+base+"." for clean-up.
package atomicfile

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"syscall"
)

// Pending is a file written and synced but not yet in place.
type Pending struct {
	root      *os.Root
	tmp, name string
}

// Prepare writes data with mode perm to a temporary file beside name in
// root and syncs it.
func Prepare(root *os.Root, name string, data []byte, perm os.FileMode) (*Pending, error) {
	p := &Pending{root: root, name: name, tmp: tempPrefix(name) + rand.Text()}
	f, err := root.OpenFile(p.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return nil, err
	}
	err = f.Chmod(perm) // exactly perm, whatever the umask
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

// tempPrefix starts the names of the temporary files that replace name.
func tempPrefix(name string) string {
	dir, base := path.Split(name)
	return dir + "." + base + ".tmp-"
}

// Commit moves the file into place, replacing what was there, and makes
// the move durable.
func (p *Pending) Commit() error {
	if err := p.root.Rename(p.tmp, p.name); err != nil {
		p.Abort()
		return err
	}
	return SyncDir(p.root, path.Dir(p.name))
}

// CommitNew moves the file into place unless something is there already,
// then it fails with an error matching fs.ErrExist. It uses link(2), which
// refuses an existing name atomically also on NFS (the classic NFS-safe
// lock file): of two concurrent CommitNew calls exactly one wins. rename(2)
// would silently replace, and flock is unreliable on network filesystems.
func (p *Pending) CommitNew() error {
	defer p.Abort() // the link holds the content
	if err := p.root.Link(p.tmp, p.name); err != nil {
		return err
	}
	return SyncDir(p.root, path.Dir(p.name))
}

// Abort removes the temporary file.
func (p *Pending) Abort() { p.root.Remove(p.tmp) }

// WriteFile replaces name in root with data, mode perm, atomically and
// durably.
func WriteFile(root *os.Root, name string, data []byte, perm os.FileMode) error {
	p, err := Prepare(root, name, data, perm)
	if err != nil {
		return err
	}
	return p.Commit()
}

// CreateFile writes name in root atomically and durably, or fails with
// an error matching fs.ErrExist if it exists; see CommitNew.
func CreateFile(root *os.Root, name string, data []byte, perm os.FileMode) error {
	p, err := Prepare(root, name, data, perm)
	if err != nil {
		return err
	}
	return p.CommitNew()
}

// Write replaces the file at path, for files outside any pool (keys,
// certificates, tokens); see WriteFile.
func Write(path string, data []byte, perm os.FileMode) error {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer root.Close()
	return WriteFile(root, filepath.Base(path), data, perm)
}

// SyncDir makes the entries of directory dir in root (creations, renames,
// removals) durable.
//
// EINVAL counts as success: it is how filesystems that cannot fsync a
// directory (some FUSE and network filesystems) refuse. They offer no
// stronger guarantee to ask for, and failing instead would make every
// write into such a pool fail.
func SyncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := dirSyncError(d.Sync()); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// dirSyncError is the failure of a directory's fsync that counts.
func dirSyncError(err error) error {
	if errors.Is(err, syscall.EINVAL) {
		return nil
	}
	return err
}
