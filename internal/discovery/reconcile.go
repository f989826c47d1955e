package discovery

import (
	"path"
	"time"

	"github.com/quarry-project/quarry/internal/osguess"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/store"
)

// File is one ISO a node listed in a pool.
type File struct {
	RelPath  string
	Size     int64
	ModTime  time.Time
	Label    string
	Bootable bool
	// Problem says why the label could not be read.
	Problem string
	// Writing: the listing node saw the file being written and not yet
	// closed. Settled: it saw the writer close the file after its last
	// change. A file that is neither may be written by another host of a
	// shared filesystem; only its age tells.
	Writing bool
	Settled bool
}

// Counts are what a reconciliation changed.
type Counts struct {
	Discovered int
	Updated    int
	Missing    int
	// Deferred files are still being written; a later scan takes them.
	Deferred int
}

// Reconcile compares the ISO images a pool has in the library with the
// files a node listed, and returns the changes to apply:
//   - a new file becomes a READY ISO image;
//   - a file whose size or modification time changed is updated;
//   - a MISSING image whose file is back is READY again, same id;
//   - a READY image whose file is gone becomes MISSING, metadata kept.
//
// Images in other states (a download or delete in progress, an error)
// belong to whoever set that state and are left alone. A new file still
// being written, or changed less than settle ago without a close seen, is
// deferred: settleAt is when to look again (zero when nothing waits).
func Reconcile(pool store.Pool, existing []store.Image, files []File, now time.Time, settle time.Duration, newID func() string) (c store.ScanChanges, n Counts, settleAt time.Time) {
	byPath := map[string]store.Image{}
	for _, im := range existing {
		if im.Kind == store.KindISO && poolfs.IsISOPath(im.RelPath) {
			byPath[im.RelPath] = im
		}
	}
	seen := map[string]bool{}
	for _, f := range files {
		// The store keeps microseconds; compare at that precision or every
		// scan would see every file as changed.
		f.ModTime = f.ModTime.Truncate(time.Microsecond)
		seen[f.RelPath] = true
		if wait := unsettled(f, now, settle); wait > 0 {
			n.Deferred++
			if at := now.Add(wait); settleAt.IsZero() || at.Before(settleAt) {
				settleAt = at
			}
			continue
		}
		im, ok := byPath[f.RelPath]
		switch {
		case !ok:
			c.Create = append(c.Create, newImage(pool, f, now, newID()))
			n.Discovered++
		case im.State == store.ImageMissing:
			c.Update = append(c.Update, store.ImageUpdate{Image: refreshed(im, f, now), ExpectState: store.ImageMissing})
			n.Updated++
		case im.State == store.ImageReady && (im.SizeBytes != f.Size || !im.ModTime.Equal(f.ModTime)):
			c.Update = append(c.Update, store.ImageUpdate{Image: refreshed(im, f, now), ExpectState: store.ImageReady})
			n.Updated++
		}
	}
	for p, im := range byPath {
		if seen[p] || im.State != store.ImageReady {
			continue
		}
		gone := im
		gone.State = store.ImageMissing
		gone.StateReason = "the file " + p + " is no longer in pool " + pool.Name + "; put it back or delete the image"
		gone.MissingSince, gone.UpdatedAt = now, now
		c.Update = append(c.Update, store.ImageUpdate{Image: gone, ExpectState: store.ImageReady})
		n.Missing++
	}
	return c, n, settleAt
}

// unsettled returns how long to wait before the file may be registered, or
// 0 when it may be now.
func unsettled(f File, now time.Time, settle time.Duration) time.Duration {
	switch {
	case f.Writing:
		return settle
	case f.Settled:
		return 0
	}
	if age := now.Sub(f.ModTime); age < settle {
		return settle - age
	}
	return 0
}

func newImage(pool store.Pool, f File, now time.Time, id string) store.Image {
	im := store.Image{
		ID:        id,
		PoolID:    pool.ID,
		Name:      path.Base(f.RelPath),
		Kind:      store.KindISO,
		Format:    "iso",
		Origin:    store.OriginDiscovered,
		CreatedAt: now,
		RelPath:   f.RelPath,
	}
	return refreshed(im, f, now)
}

// refreshed is im with the file's current facts, READY.
func refreshed(im store.Image, f File, now time.Time) store.Image {
	im.State = store.ImageReady
	im.StateReason = ""
	if f.Problem != "" {
		im.StateReason = "no ISO 9660 volume label: " + f.Problem
	}
	im.SizeBytes, im.ModTime = f.Size, f.ModTime
	im.VolumeLabel, im.Bootable = f.Label, f.Bootable
	g := osguess.Guess(f.Label, f.RelPath)
	im.OSDistro, im.OSVersion, im.OSArch = g.Distro, g.Version, g.Arch
	im.MissingSince = time.Time{}
	im.UpdatedAt = now
	return im
}
