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
// recognized by them, never registered from them. Formats are cached like
// labels, so a rescan of an unchanged tree reads no headers. Hidden files and directories are skipped, like in Scan; a symlink is
// followed only inside the pool.
func (s *Scanner) ScanImages(ctx context.Context, dir string) ([]File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if _, err := root.Stat(poolfs.ImagesDir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var files []File
	seen := map[cacheKey]bool{}
	defer s.forgetFormats(dir, seen)
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
		key := cacheKey{dir, p, fi.Size(), fi.ModTime().UnixNano()}
		seen[key] = true
		files = append(files, File{RelPath: p, Size: fi.Size(), ModTime: fi.ModTime().UTC(), Format: s.format(root, p, key)})
		return nil
	})
	return files, err
}

// format returns the format of the disk image at rel, or "" when it
// cannot be read: a few small reads of its header, or the cache.
func (s *Scanner) format(root *os.Root, rel string, key cacheKey) string {
	s.mu.Lock()
	format, ok := s.formats[key]
	s.mu.Unlock()
	if ok {
		return format
	}
	f, err := root.Open(rel)
	if err != nil {
		return ""
	}
	defer f.Close()
	format, _, err = ingest.Sniff(f, key.size)
	if err != nil {
		return ""
	}
	s.mu.Lock()
	s.formats[key] = format
	s.mu.Unlock()
	return format
}

// forgetFormats drops cached formats of files under dir that the last
// listing did not see.
func (s *Scanner) forgetFormats(dir string, seen map[cacheKey]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.formats {
		if k.root == dir && !seen[k] {
			delete(s.formats, k)
		}
	}
}
