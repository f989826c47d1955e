package ingest

import (
	"errors"
	"io/fs"
	"os"
	"path"

	"github.com/quarry-project/quarry/internal/atomicfile"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// PartialPath is where the partial file of a job that writes a new pool
// file lives, relative to the pool root: downloads, uploads and
// conversions alike, so a cancel's Discard finds it. It fails for a job
// id that is not a safe file name.
func PartialPath(job string) (string, error) {
	if err := checkJob(job); err != nil {
		return "", err
	}
	return partialPath(job), nil
}

// Place moves a complete, synced file (relative to root) to dest, which
// must not exist, and makes the move durable: the last step of every
// writer of a new pool file. describe names the pool for the error a taken
// dest gets (errclass.Conflict).
func Place(root *os.Root, from, dest, describe string) error {
	if err := poolfs.CheckImagePath(dest); err != nil {
		return errclass.New(errclass.InvalidArgument, "destination %v", err)
	}
	if err := root.MkdirAll(path.Dir(dest), 0o755); err != nil {
		return err
	}
	err := renameNoReplace(root, from, dest)
	if errors.Is(err, fs.ErrExist) {
		return errclass.New(errclass.Conflict, "%s already holds %s; delete it or choose another name", describe, dest)
	}
	if err != nil {
		return err
	}
	return atomicfile.SyncDir(root, path.Dir(dest))
}
