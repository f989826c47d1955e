package discovery

import (
	"context"
	"fmt"
	"path"
	"strings"
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
	// Format is what the header of a file under images/ says; "" for ISOs
	// (their label identifies them) and unreadable files.
	Format string
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
	// Changed images have a recorded digest and a file whose size is not
	// the recorded one any more: they are ERROR until re-verified. The
	// count is of every such image the scan saw, flagged by this scan or
	// an earlier one (a watch-triggered scan often gets there first).
	Changed int
	// Deferred files are still being written; a later scan takes them.
	Deferred int
	// Moved images had their file renamed or moved inside the pool: they
	// keep their id, metadata and history under the new path.
	Moved int
}

// Library is what the library holds in one pool, as a scan compares it
// with the disk.
type Library struct {
	Images []store.Image
	// Busy holds the ids of images an active job (a download, a verify)
	// works on: a scan leaves them alone whatever their state.
	Busy map[string]bool
}

// ReadLibrary reads every image of the pool and the active jobs that work
// on them.
func ReadLibrary(ctx context.Context, st store.Store, poolID string) (Library, error) {
	ims, err := st.ListImages(ctx, store.ImageFilter{PoolID: poolID})
	if err != nil {
		return Library{}, err
	}
	jobs, err := st.ListJobs(ctx, store.JobFilter{PoolID: poolID, States: []store.JobState{store.JobQueued, store.JobRunning}})
	if err != nil {
		return Library{}, err
	}
	lib := Library{Images: ims, Busy: map[string]bool{}}
	for _, j := range jobs {
		lib.Busy[j.ImageID] = true
	}
	return lib, nil
}

// ChangedReason starts the state reason of an image whose file changed on
// disk after its digest was recorded.
const ChangedReason = "file changed on disk since it was verified"

// Reconcile compares the images a pool has in the library with the files
// a node listed (under iso/ and images/), and returns the changes to apply:
//   - a new file under iso/ becomes a READY ISO image (files under images/
//     are never registered from the disk: downloads and uploads do that);
//   - an ISO without a recorded digest whose size or modification time
//     changed is updated;
//   - an image with a recorded digest (a downloaded cloud image, disk or
//     ISO) whose file's size changed becomes ERROR, ChangedReason, until a
//     verify job finds the recorded digest again;
//   - a MISSING image whose file is back is READY again, same id (ERROR
//     instead, if it has a digest and came back with another size);
//   - a READY image whose file is gone becomes MISSING, metadata kept —
//     unless its file was renamed or moved inside the same directory tree
//     (iso/ or images/): one new file, not being written, with the same
//     size, modification time and volume label (iso/) or format header
//     (images/), and no other vanished image or new file alike. Then the
//     image moves to the new path and keeps its id, metadata and history
//     (a name that was the old file name follows the new one).
//
// Images in other states (a download or delete in progress, an error) and
// images an active job works on belong to whoever set that state and are
// left alone. A new file still being written, or changed less than settle
// ago without a close seen, is deferred: settleAt is when to look again
// (zero when nothing waits).
func Reconcile(pool store.Pool, lib Library, files []File, now time.Time, settle time.Duration, newID func() string) (c store.ScanChanges, n Counts, settleAt time.Time) {
	byPath := map[string]store.Image{}
	for _, im := range lib.Images {
		if poolfs.IsImagePath(im.RelPath) && !lib.Busy[im.ID] {
			byPath[im.RelPath] = im
		}
	}
	taken := map[string]bool{} // every image path, busy or not: never created twice
	for _, im := range lib.Images {
		taken[im.RelPath] = true
		if lib.Busy[im.ID] {
			// An upload whose content decides its kind may land in the
			// other directory before its job records it there.
			taken[poolfs.ImagePath(path.Base(im.RelPath), !poolfs.IsISOPath(im.RelPath))] = true
		}
	}
	seen := make(map[string]bool, len(files))
	for i := range files {
		// The store keeps microseconds; compare at that precision or every
		// scan would see every file as changed.
		files[i].ModTime = files[i].ModTime.Truncate(time.Microsecond)
		seen[files[i].RelPath] = true
	}
	moves := matchMoves(byPath, taken, seen, files)
	movedFrom := map[string]bool{}
	for _, f := range files {
		if old, ok := moves[f.RelPath]; ok {
			c.Update = append(c.Update, store.ImageUpdate{Image: moved(old, f, now), ExpectState: store.ImageReady, Move: true})
			movedFrom[old.RelPath] = true
			n.Moved++
			continue
		}
		im, ok := byPath[f.RelPath]
		if ok && im.SHA256 != "" {
			// A recorded digest: only its size can tell, and no settling
			// applies (a file rewritten in place has changed either way).
			u, changed := checked(pool, im, f, now)
			switch {
			case changed && im.State == store.ImageReady && u.Image.State == store.ImageReady:
				// Only its modification time was learnt: nothing to count.
			case changed && u.Image.State == store.ImageReady:
				n.Updated++
			case changed || (im.State == store.ImageError && strings.HasPrefix(im.StateReason, ChangedReason)):
				n.Changed++
			}
			if changed {
				c.Update = append(c.Update, u)
			}
			continue
		}
		if !poolfs.IsISOPath(f.RelPath) || (!ok && taken[f.RelPath]) {
			continue // not discovery's to register, or an image a job works on
		}
		if wait := unsettled(f, now, settle); wait > 0 {
			n.Deferred++
			if at := now.Add(wait); settleAt.IsZero() || at.Before(settleAt) {
				settleAt = at
			}
			continue
		}
		switch {
		case !ok:
			c.Create = append(c.Create, newImage(pool, f, now, newID()))
			n.Discovered++
		case im.Kind != store.KindISO:
		case im.State == store.ImageMissing:
			c.Update = append(c.Update, store.ImageUpdate{Image: refreshed(im, f, now), ExpectState: store.ImageMissing})
			n.Updated++
		case im.State == store.ImageReady && (im.SizeBytes != f.Size || !im.ModTime.Equal(f.ModTime)):
			c.Update = append(c.Update, store.ImageUpdate{Image: refreshed(im, f, now), ExpectState: store.ImageReady})
			n.Updated++
		}
	}
	for p, im := range byPath {
		if seen[p] || movedFrom[p] || im.State != store.ImageReady {
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

// moveKey is what a renamed or moved file keeps: its directory tree, size,
// modification time and volume label (iso/) or format header (images/).
type moveKey struct {
	tree   bool // under iso/
	size   int64
	mtime  int64 // Unix microseconds
	header string
}

// matchMoves pairs READY images whose file vanished with new files that
// are the same file under another path, by new path. Only unambiguous
// pairs count: two vanished images or two new files alike are left to be
// MISSING and new, never guessed at.
func matchMoves(byPath map[string]store.Image, taken, seen map[string]bool, files []File) map[string]store.Image {
	gone := map[moveKey][]store.Image{}
	for p, im := range byPath {
		if seen[p] || im.State != store.ImageReady || im.ModTime.IsZero() {
			continue
		}
		k := moveKey{poolfs.IsISOPath(p), im.SizeBytes, im.ModTime.UnixMicro(), im.VolumeLabel}
		if !k.tree {
			if im.Format == "" {
				continue
			}
			k.header = im.Format
		}
		gone[k] = append(gone[k], im)
	}
	if len(gone) == 0 {
		return nil
	}
	arrived := map[moveKey][]File{}
	for _, f := range files {
		if taken[f.RelPath] || f.Writing || !poolfs.IsImagePath(f.RelPath) {
			continue
		}
		k := moveKey{poolfs.IsISOPath(f.RelPath), f.Size, f.ModTime.UnixMicro(), f.Label}
		if !k.tree {
			if f.Format == "" {
				continue
			}
			k.header = f.Format
		}
		arrived[k] = append(arrived[k], f)
	}
	moves := map[string]store.Image{}
	for k, ims := range gone {
		if fs := arrived[k]; len(ims) == 1 && len(fs) == 1 {
			moves[fs[0].RelPath] = ims[0]
		}
	}
	return moves
}

// moved is im at the path of its renamed file f. A discovered ISO is
// described afresh (its OS guess reads the file name too); an image with a
// digest keeps its facts. A name that was the old file name follows the
// new one; a name someone chose stays.
func moved(im store.Image, f File, now time.Time) store.Image {
	if path.Base(im.RelPath) == im.Name {
		im.Name = path.Base(f.RelPath)
	}
	im.RelPath = f.RelPath
	if im.SHA256 == "" && im.Kind == store.KindISO {
		return refreshed(im, f, now)
	}
	im.UpdatedAt = now
	return im
}

// checked compares an image that has a recorded digest with its file: a
// MISSING one whose file is back unchanged is READY again; one whose
// file's size is not the recorded one (READY or MISSING) is ERROR. changed
// is false when nothing is to be done.
func checked(pool store.Pool, im store.Image, f File, now time.Time) (u store.ImageUpdate, changed bool) {
	if im.State != store.ImageReady && im.State != store.ImageMissing {
		return u, false
	}
	u = store.ImageUpdate{Image: im, ExpectState: im.State}
	u.Image.UpdatedAt, u.Image.MissingSince = now, time.Time{}
	if f.Size == im.SizeBytes {
		if im.State == store.ImageReady {
			// A download records when it ended, not the file's time: learn
			// that once, so a later rename of the file is recognized.
			if f.Writing {
				return u, false
			}
			u.Image.ModTime = f.ModTime
			return u, !im.ModTime.Equal(f.ModTime)
		}
		u.Image.ModTime = f.ModTime
		u.Image.State, u.Image.StateReason = store.ImageReady, ""
		return u, true
	}
	u.Image.State = store.ImageError
	u.Image.StateReason = fmt.Sprintf("%s: %s in pool %s is %d bytes, %d when its digest sha256:%s was recorded; "+
		"run quarry image verify %s to hash it again, or quarry image rm %s",
		ChangedReason, im.RelPath, pool.Name, f.Size, im.SizeBytes, im.SHA256, im.ID, im.ID)
	return u, true
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

// Describe is im with the facts of its ISO file f, READY: how an ISO's
// label and OS guess enter the library, for the ISOs discovery finds and
// for the ones uploaded (which discovery then knows by their path).
func Describe(im store.Image, f File, now time.Time) store.Image { return refreshed(im, f, now) }

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
