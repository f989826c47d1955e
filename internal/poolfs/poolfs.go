// Package poolfs is the one place that knows how a storage pool lies on
// disk. Relative to the pool directory:
//
//	iso/                 ISOs, found by discovery at any depth
//	images/              cloud images and disks
//	.quarry/pool.json    the marker: the pool's identity
//	.quarry/partial/     partial downloads and their checkpoints
//
// Names starting with "." are hidden from listings: .quarry itself, and
// the temporary files of copies in progress (rsync, atomicfile).
//
// The contract: every path this package accepts or builds is clean,
// slash-separated and relative to the pool root, and every file it reads
// or writes is resolved through an *os.Root of that root, so neither ".."
// nor a symlink leads outside the pool. What it writes is durable when it
// returns (see atomicfile). It holds no state.
package poolfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/quarry-project/quarry/internal/atomicfile"
)

// The layout, relative to the pool root.
const (
	ISODir     = "iso"
	ImagesDir  = "images"
	MetaDir    = ".quarry" // Quarry's own files; never an image
	MarkerPath = MetaDir + "/pool.json"
	PartialDir = MetaDir + "/partial"
)

// Hidden reports whether a file or directory of this base name is left
// out of listings: dot files, which hold Quarry's own state or copies in
// progress.
func Hidden(name string) bool { return strings.HasPrefix(name, ".") }

// IsISOName reports whether a file of this base name is an ISO discovery
// registers: *.iso in any case, not hidden.
func IsISOName(name string) bool {
	return !Hidden(name) && strings.EqualFold(path.Ext(name), ".iso")
}

// CheckPath accepts rel if it names something inside the pool: relative,
// clean, slash-separated (no backslash), without NUL, and not the root
// itself. The error says what is wrong with rel.
func CheckPath(rel string) error {
	switch {
	case rel == "" || strings.ContainsRune(rel, 0):
		return fmt.Errorf("%q is empty or holds a NUL byte", clip(rel))
	case path.IsAbs(rel) || path.Clean(rel) != rel || strings.ContainsRune(rel, '\\') ||
		rel == "." || rel == ".." || strings.HasPrefix(rel, "../"):
		return fmt.Errorf("%q is not a clean path inside the pool such as %s/disk.qcow2", clip(rel), ImagesDir)
	}
	return nil
}

// CheckImagePath accepts rel if it is a path an image can have: a clean
// path (CheckPath) under iso/ or images/, never the marker, a partial
// download or anything outside the pool.
func CheckImagePath(rel string) error {
	if err := CheckPath(rel); err != nil {
		return err
	}
	if !IsImagePath(rel) {
		return fmt.Errorf("%q is not under %s/ or %s/", clip(rel), ISODir, ImagesDir)
	}
	return nil
}

// IsImagePath reports whether the clean path rel lies under iso/ or
// images/.
func IsImagePath(rel string) bool { return IsISOPath(rel) || under(rel, ImagesDir) }

// IsISOPath reports whether the clean path rel lies under iso/, where
// discovery looks.
func IsISOPath(rel string) bool { return under(rel, ISODir) }

// IsMeta reports whether the clean path rel is .quarry or lies under it.
func IsMeta(rel string) bool { return rel == MetaDir || under(rel, MetaDir) }

// ImagePath is where an image of this file name goes: iso/<name> for an
// ISO, images/<name> for everything else.
func ImagePath(name string, iso bool) string {
	if iso {
		return ISODir + "/" + name
	}
	return ImagesDir + "/" + name
}

func under(rel, dir string) bool { return strings.HasPrefix(rel, dir+"/") }

// MakeDirs creates the directories of the layout that are missing, and
// makes their entries durable.
func MakeDirs(root *os.Root) error {
	for _, d := range []string{MetaDir, ISODir, ImagesDir} {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(root, ".")
}

// Marker is the content of .quarry/pool.json.
type Marker struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	CreatedAt     string `json:"createdAt"` // RFC 3339
	InitializedBy string `json:"initializedBy"`
}

// MaxMarkerSize bounds what ReadMarker reads; a real marker is a few
// hundred bytes.
const MaxMarkerSize = 64 << 10

// ErrBadMarker: a marker file exists but is not one (unparsable, too
// large, without an id). Errors that wrap it say why.
var ErrBadMarker = errors.New("damaged pool marker")

type badMarker struct{ err error }

func (e badMarker) Error() string        { return e.err.Error() }
func (e badMarker) Is(target error) bool { return target == ErrBadMarker }

// ReadMarker reads and parses the marker through root, so that a
// symlinked .quarry or pool.json cannot make a caller trust a file outside
// the pool. A missing marker is an error matching fs.ErrNotExist.
func ReadMarker(root *os.Root) (Marker, error) {
	f, err := root.Open(MarkerPath)
	if err != nil {
		return Marker{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxMarkerSize+1))
	if err != nil {
		return Marker{}, err
	}
	if len(b) > MaxMarkerSize {
		return Marker{}, badMarker{fmt.Errorf("larger than %d bytes", MaxMarkerSize)}
	}
	var m Marker
	if err := json.Unmarshal(b, &m); err != nil {
		return Marker{}, badMarker{err}
	}
	if m.ID == "" {
		return Marker{}, badMarker{errors.New(`no "id"`)}
	}
	return m, nil
}

// CreateMarker publishes m as the marker, durably, or fails with an error
// matching fs.ErrExist when a marker is already there: of two concurrent
// calls, also on a network filesystem, exactly one succeeds (see
// atomicfile.Pending.CommitNew). Readers see a complete marker or none.
func CreateMarker(root *os.Root, m Marker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.CreateFile(root, MarkerPath, append(b, '\n'), 0o644)
}

func clip(s string) string {
	if len(s) > 140 {
		return s[:140] + "…"
	}
	return s
}
