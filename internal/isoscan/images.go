package isoscan

import (
	"context"
	"errors"
	"io/fs"
	"os"

	"github.com/quarry-project/quarry/internal/ingest"
	"github.com/quarry-project/quarry/internal/poolfs"
)

// ScanImages lists every regular file under images/ of the pool at dir, at
// any depth, with its size, modification time and the format its header
// says (Format; empty when it cannot be read): the cloud images and disks
// the library holds are checked against these, and a renamed one is
// recognized by them, never registered from them. Hidden files and directories are skipped, like in Scan; a symlink is
// followed only inside the pool.
func ScanImages(ctx context.Context, dir string) ([]File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if _, err := root.Stat(poolfs.ImagesDir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var files []File
	err = fs.WalkDir(root.FS(), poolfs.ImagesDir, func(p string, d fs.DirEntry, err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if err != nil {
			if p == poolfs.ImagesDir {
				return err
			}
			return nil
		}
		if p != poolfs.ImagesDir && poolfs.Hidden(d.Name()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		fi, err := root.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		files = append(files, File{RelPath: p, Size: fi.Size(), ModTime: fi.ModTime().UTC(), Format: sniff(root, p, fi.Size())})
		return nil
	})
	return files, err
}

// sniff returns the format of the disk image at rel, or "" when it cannot
// be read: a few small reads of its header.
func sniff(root *os.Root, rel string, size int64) string {
	f, err := root.Open(rel)
	if err != nil {
		return ""
	}
	defer f.Close()
	format, _, err := ingest.Sniff(f, size)
	if err != nil {
		return ""
	}
	return format
}
