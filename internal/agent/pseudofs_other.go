//go:build !linux

package agent

// pseudoFS knows no pseudo filesystems off Linux; system directories are
// still refused by path.
func pseudoFS(string) string { return "" }
