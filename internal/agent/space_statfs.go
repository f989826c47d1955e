//go:build linux || darwin

package agent

import "syscall"

// space returns the bytes available to the agent and the size of the
// filesystem holding dir, or zeros when it cannot tell.
func space(dir string) (free, total uint64) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0
	}
	bsize := uint64(st.Bsize)
	return st.Bavail * bsize, st.Blocks * bsize
}
