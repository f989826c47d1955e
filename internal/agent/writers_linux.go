//go:build linux

package agent

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// openForWriting reports whether some process has the file at rel open for
// writing: the kernel refuses a read lease (F_SETLEASE F_RDLCK) with EAGAIN
// exactly then. known is false when it cannot tell: the agent neither owns
// the file nor has CAP_LEASE, or the filesystem has no leases (NFS). The
// lease, when granted, is dropped at once; a writer opening the file in
// between waits for that, not longer.
func openForWriting(root *os.Root, rel string) (writing, known bool) {
	f, err := root.Open(rel)
	if err != nil {
		return false, false
	}
	defer f.Close()
	sc, err := f.SyscallConn()
	if err != nil {
		return false, false
	}
	sc.Control(func(fd uintptr) {
		_, err := unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_RDLCK)
		switch {
		case err == nil:
			unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_UNLCK)
			writing, known = false, true
		case errors.Is(err, unix.EAGAIN):
			writing, known = true, true
		}
	})
	return writing, known
}
