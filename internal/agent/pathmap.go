package agent

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Bind maps pool paths under Path (absolute) to the host directory Dir, like a
// bind mount: the pool path /srv/nfs/isos is served from Dir/isos when Path is
// /srv/nfs. Several agents on one machine can share a directory that stands
// for NFS this way.
type Bind struct{ Path, Dir string }

// ParseBind parses "PATH=DIR" (the value of a --bind flag). Both sides must be
// absolute; they are returned cleaned.
func ParseBind(s string) (Bind, error) {
	p, d, ok := strings.Cut(s, "=")
	if !ok || p == "" || d == "" {
		return Bind{}, fmt.Errorf("bind %q: want PATH=DIR, e.g. /srv/nfs=/tmp/shared", s)
	}
	b := Bind{Path: p, Dir: d}
	if err := b.check(); err != nil {
		return Bind{}, fmt.Errorf("bind %q: %w", s, err)
	}
	return Bind{Path: filepath.Clean(p), Dir: filepath.Clean(d)}, nil
}

func (b Bind) check() error {
	if !filepath.IsAbs(b.Path) {
		return fmt.Errorf("pool path %q is not absolute", b.Path)
	}
	if !filepath.IsAbs(b.Dir) {
		return fmt.Errorf("host directory %q is not absolute", b.Dir)
	}
	return nil
}

// pathMap turns a pool path, as the pool spec gives it, into the directory
// this agent serves it from. It is immutable after newPathMap.
type pathMap struct {
	fsRoot string // "" means the real filesystem
	binds  []Bind // cleaned, longest Path first
}

// newPathMap expects binds that passed Bind.check and an absolute or empty
// fsRoot.
func newPathMap(fsRoot string, binds []Bind) pathMap {
	bs := make([]Bind, len(binds))
	for i, b := range binds {
		bs[i] = Bind{Path: filepath.Clean(b.Path), Dir: filepath.Clean(b.Dir)}
	}
	// Longest prefix wins; with clean paths a longer Path is always the more
	// specific match.
	slices.SortStableFunc(bs, func(x, y Bind) int { return cmp.Compare(len(y.Path), len(x.Path)) })
	if fsRoot != "" {
		fsRoot = filepath.Clean(fsRoot)
	}
	return pathMap{fsRoot: fsRoot, binds: bs}
}

// resolve maps a clean absolute pool path (see checkPoolPath) to a host
// directory. A bind matches on whole path components only: /srv/nfs covers
// /srv/nfs and /srv/nfs/x but not /srv/nfs2.
func (m pathMap) resolve(p string) string {
	for _, b := range m.binds {
		if rel, ok := under(p, b.Path); ok {
			return filepath.Join(b.Dir, rel)
		}
	}
	if m.fsRoot != "" {
		// p is clean and absolute, so it holds no ".." and Join stays under fsRoot.
		return filepath.Join(m.fsRoot, p)
	}
	return p
}

// under reports whether p is base or lies below it, and the rest of p.
func under(p, base string) (string, bool) {
	if base == "/" {
		return p, true
	}
	if p == base {
		return "", true
	}
	if rest, ok := strings.CutPrefix(p, base); ok && strings.HasPrefix(rest, "/") {
		return rest, true
	}
	return "", false
}
