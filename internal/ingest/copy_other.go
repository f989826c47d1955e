//go:build !linux

package ingest

import (
	"errors"
	"os"
)

var errNoCopyRange = errors.New("copy_file_range is not supported on this system")

func reflink(dst, src *os.File) error { return errors.ErrUnsupported }

func copyRange(dst, src *os.File, off, n int64) (int64, error) { return 0, errNoCopyRange }
