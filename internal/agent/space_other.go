//go:build !linux && !darwin

package agent

// space is not implemented here: nodes run Linux. The agent still builds so
// that the quarry binary, which embeds it, builds everywhere.
func space(dir string) (free, total uint64) { return 0, 0 }
