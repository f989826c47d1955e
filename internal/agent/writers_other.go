//go:build !linux

package agent

import "os"

// openForWriting cannot tell here: nodes run Linux.
func openForWriting(root *os.Root, rel string) (writing, known bool) { return false, false }
