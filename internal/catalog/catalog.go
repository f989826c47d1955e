// Package catalog is the list of well-known cloud images an operator can
// download by id ("ubuntu-24.04") instead of a URL: the entries built into
// Quarry, plus or overridden by entries from JSON files.
//
// A Catalog is immutable once loaded and safe for concurrent use. Every
// entry in it has passed Validate.
package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrNotFound: no entry has the id asked for.
var ErrNotFound = errors.New("not found")

// OS describes what an image holds, with the ids internal/osguess uses:
// Distro "ubuntu", "centos-stream", "opensuse-leap"…; Arch "amd64",
// "arm64"…
type OS struct {
	Distro  string `json:"distro,omitempty"`
	Version string `json:"version,omitempty"`
	Arch    string `json:"arch,omitempty"`
}

// Entry is one downloadable image. The JSON names are those of catalog
// files.
type Entry struct {
	ID   string `json:"id"`   // what operators type; follows names.Check
	Name string `json:"name"` // for people: "Ubuntu 24.04 LTS (Noble Numbat)"
	OS   OS     `json:"os"`
	URL  string `json:"url"` // http or https
	// Checksum pins the digest, "sha256:<hex>" or "sha512:<hex>". When set,
	// downloads verify against it and ChecksumURL is only a reference.
	Checksum string `json:"checksum,omitempty"`
	// ChecksumURL is a checksum file (SHA256SUMS, CHECKSUM …) fetched at
	// download time; the line for the URL's file name is used (see
	// checksum.FindIn). With neither field, downloads are not verified.
	ChecksumURL string `json:"checksumUrl,omitempty"`
	Format      string `json:"format"`                // "qcow2" or "raw"
	DefaultUser string `json:"defaultUser,omitempty"` // the login cloud-init creates
	Notes       string `json:"notes,omitempty"`
	// Origin says where the entry comes from: "built-in" or a file's path.
	Origin string `json:"-"`
}

// OriginBuiltin is the Origin of the entries Quarry ships.
const OriginBuiltin = "built-in"

// Catalog is a loaded set of entries, keyed by id.
type Catalog struct {
	byID map[string]Entry
}

// Builtin returns a copy of the entries Quarry ships.
func Builtin() []Entry {
	out := slices.Clone(builtin)
	for i := range out {
		out[i].Origin = OriginBuiltin
	}
	return out
}

// Load builds a catalog from the built-in entries (if builtin is set) and
// then each file in order. A file entry whose id is already present
// replaces it, so files can fix or retire a built-in URL and later files
// override earlier ones; any other entry is added. Every entry is
// validated, and the first problem is returned naming its file and entry.
func Load(builtinEntries bool, files ...string) (*Catalog, error) {
	c := &Catalog{byID: map[string]Entry{}}
	if builtinEntries {
		for _, e := range Builtin() {
			if err := e.Validate(); err != nil {
				// The built-in list is tested; this is a programming error.
				return nil, fmt.Errorf("built-in catalog entry %q: %w", e.ID, err)
			}
			c.byID[e.ID] = e
		}
	}
	for _, f := range files {
		entries, err := readFile(f)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			c.byID[e.ID] = e
		}
	}
	return c, nil
}

// List returns every entry, sorted by id.
func (c *Catalog) List() []Entry {
	out := make([]Entry, 0, len(c.byID))
	for _, e := range c.byID {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Get returns the entry with the given id. The error for an unknown id
// wraps ErrNotFound and suggests the nearest ids.
func (c *Catalog) Get(id string) (Entry, error) {
	if e, ok := c.byID[id]; ok {
		return e, nil
	}
	if id == "" {
		return Entry{}, &notFound{"no catalog entry id given; see quarry catalog ls"}
	}
	msg := fmt.Sprintf("no catalog entry %q; ", id)
	if s := c.suggest(id); len(s) > 0 {
		msg += "did you mean " + orList(s) + "? "
	}
	return Entry{}, &notFound{msg + "see quarry catalog ls"}
}

// notFound keeps the message free of the sentinel's text.
type notFound struct{ msg string }

func (e *notFound) Error() string { return e.msg }
func (e *notFound) Unwrap() error { return ErrNotFound }

// suggest returns up to three ids close to id: those it is a prefix of
// ("debian" → debian-12, debian-13), else those that have its parts
// ("centos-9" → centos-stream-9, "alma-9" → almalinux-9), else those at
// the smallest edit distance if that is small for the length of id
// ("ubuntu-2404" → ubuntu-24.04).
func (c *Catalog) suggest(id string) []string {
	ids := make([]string, 0, len(c.byID))
	for k := range c.byID {
		ids = append(ids, k)
	}
	slices.Sort(ids)
	lower := strings.ToLower(id)

	var out []string
	for _, k := range ids {
		if strings.HasPrefix(strings.ToLower(k), lower) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		for _, k := range ids {
			if partsMatch(lower, strings.ToLower(k)) {
				out = append(out, k)
			}
		}
	}
	if len(out) == 0 {
		limit := max(2, len(id)/3) // farther than this is another word
		best := limit + 1
		for _, k := range ids {
			switch d := distance(lower, strings.ToLower(k)); {
			case d > limit:
			case d < best:
				best, out = d, []string{k}
			case d == best:
				out = append(out, k)
			}
		}
	}
	if len(out) > 3 {
		out = out[:3]
	}
	return out
}

// partsMatch says whether every '-'-separated part of id starts some part
// of candidate.
func partsMatch(id, candidate string) bool {
	have := strings.Split(candidate, "-")
	for _, p := range strings.Split(id, "-") {
		if p == "" || !slices.ContainsFunc(have, func(h string) bool { return strings.HasPrefix(h, p) }) {
			return false
		}
	}
	return true
}

// orList joins ids as "a", "a or b", "a, b or c".
func orList(ids []string) string {
	if len(ids) == 1 {
		return ids[0]
	}
	return strings.Join(ids[:len(ids)-1], ", ") + " or " + ids[len(ids)-1]
}

// distance is the Levenshtein edit distance between a and b, by bytes
// (ids are ASCII).
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
