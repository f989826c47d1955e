package ingest

import (
	"errors"
	"os"
	"path"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// datasync makes the file's data durable without its timestamps: all a
// checkpoint needs, and cheaper than fsync on most filesystems.
func datasync(f *os.File) error {
	var err error
	for {
		if err = unix.Fdatasync(int(f.Fd())); err != unix.EINTR {
			break
		}
	}
	runtime.KeepAlive(f)
	if err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}

// freeSpace returns the bytes an unprivileged writer may still use on the
// filesystem holding dir; -1 when it cannot tell.
func freeSpace(root *os.Root, dir string) int64 {
	d, err := root.Open(dir)
	if err != nil {
		return -1
	}
	defer d.Close()
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(d.Fd()), &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// renameNoReplace moves oldname to newname (both inside root) and fails
// with an error matching fs.ErrExist if newname exists, atomically where
// the filesystem supports RENAME_NOREPLACE: a file another job put there
// in the meantime is never overwritten.
func renameNoReplace(root *os.Root, oldname, newname string) error {
	od, err := root.Open(path.Dir(oldname))
	if err != nil {
		return err
	}
	defer od.Close()
	nd, err := root.Open(path.Dir(newname))
	if err != nil {
		return err
	}
	defer nd.Close()
	// The directories were opened through root, so the rename cannot
	// leave it whatever the names' parents are.
	err = unix.Renameat2(int(od.Fd()), path.Base(oldname), int(nd.Fd()), path.Base(newname), unix.RENAME_NOREPLACE)
	runtime.KeepAlive(od)
	runtime.KeepAlive(nd)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		// Some network filesystems lack the flag: check, then rename.
		if _, err := root.Lstat(newname); err == nil {
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: unix.EEXIST}
		}
		return root.Rename(oldname, newname)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return nil
}

// isNoSpace reports a write that failed for lack of space or quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
