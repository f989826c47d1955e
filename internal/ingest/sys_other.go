//go:build !linux

package ingest

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// Nodes run Linux; elsewhere the package builds (the quarry binary embeds
// the agent) with plainer stand-ins: fsync for fdatasync, no space check,
// a rename that checks before it moves, no allocation ahead, and writes
// through the page cache.

func datasync(f *os.File) error { return f.Sync() }

func setDirect(f *os.File, on bool) error {
	if on {
		return errors.ErrUnsupported
	}
	return nil
}

func allocate(f *os.File, size int64) error { return nil }

func chunkMemory(n int) ([]byte, error) { return make([]byte, n), nil }

func freeChunkMemory([]byte) {}

func freeSpace(root *os.Root, dir string) int64 { return -1 }

func renameNoReplace(root *os.Root, oldname, newname string) error {
	if _, err := root.Lstat(newname); err == nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrExist}
	}
	return root.Rename(oldname, newname)
}

func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }
