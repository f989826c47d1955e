package ingest

import (
	"errors"
	"os"
	"path"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// onFD runs fn on f's descriptor, again while it fails with EINTR, and
// reports its failure as a *PathError for op.
func onFD(f *os.File, op string, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		for {
			if ferr = fn(int(fd)); ferr != unix.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	if ferr != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: ferr}
	}
	return nil
}

// datasync makes the file's data durable without its timestamps: all a
// checkpoint needs, and cheaper than fsync on most filesystems.
func datasync(f *os.File) error { return onFD(f, "fdatasync", unix.Fdatasync) }

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

// setDirect turns O_DIRECT on or off for f's open file; turning it on
// fails with EINVAL where the filesystem does not support it.
func setDirect(f *os.File, on bool) error {
	return onFD(f, "fcntl O_DIRECT", func(fd int) error {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			return err
		}
		if on {
			flags |= unix.O_DIRECT
		} else {
			flags &^= unix.O_DIRECT
		}
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags)
		return err
	})
}

// allocate gives f blocks for its first size bytes, growing it to size if
// it is shorter; filesystems that cannot allocate ahead are left alone.
func allocate(f *os.File, size int64) error {
	err := onFD(f, "fallocate", func(fd int) error { return unix.Fallocate(fd, 0, 0, size) })
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil
	}
	return err
}

// chunkMemory maps n bytes of anonymous memory: page-aligned, as O_DIRECT
// wants, and returned to the system by freeChunkMemory.
func chunkMemory(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
}

func freeChunkMemory(b []byte) { unix.Munmap(b) }
