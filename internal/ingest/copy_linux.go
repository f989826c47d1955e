package ingest

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errNoCopyRange: the kernel cannot copy between these files (across
// filesystems on old kernels, or a filesystem without support); copy
// through user space instead.
var errNoCopyRange = errors.New("copy_file_range is not supported between these files")

// reflink makes dst share src's extents (FICLONE): instant and taking no
// space, on filesystems that allow it (btrfs, XFS with reflink, bcachefs).
func reflink(dst, src *os.File) error {
	return onFD(dst, "ficlone", func(fd int) error { return unix.IoctlFileClone(fd, int(src.Fd())) })
}

// copyRange copies up to n bytes at off from src to dst in the kernel.
func copyRange(dst, src *os.File, off, n int64) (int64, error) {
	var moved int
	err := onFD(dst, "copy_file_range", func(fd int) error {
		roff, woff := off, off
		var err error
		moved, err = unix.CopyFileRange(int(src.Fd()), &roff, fd, &woff, int(n), 0)
		return err
	})
	if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
		return 0, errNoCopyRange
	}
	return int64(moved), err
}
