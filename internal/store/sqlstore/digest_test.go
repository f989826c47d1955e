package sqlstore

import (
	"slices"
	"testing"

	"github.com/quarry-project/quarry/internal/store"
)

// TestMountsDigest: the same mounts in any order have one digest; a change
// of any field sameMount compares, or a mount more, another.
func TestMountsDigest(t *testing.T) {
	mounts := []store.PoolMount{
		{PoolID: "p1", Mounted: true, FreeBytes: 10, TotalBytes: 100},
		{PoolID: "p2", Reason: "not mounted"},
		{PoolID: "p3", Mounted: true, FreeBytes: 1 << 40, TotalBytes: 1 << 41},
	}
	want := mountsDigest(mounts)
	if got := mountsDigest(slices.Clone(mounts)); got != want {
		t.Fatalf("digest of the same mounts differs: %s, %s", got, want)
	}
	if got := mountsDigest([]store.PoolMount{mounts[2], mounts[0], mounts[1]}); got != want {
		t.Fatalf("digest depends on the order: %s, %s", got, want)
	}
	seen := map[string]string{want: "as reported"}
	for name, change := range map[string]func(m []store.PoolMount) []store.PoolMount{
		"mounted":     func(m []store.PoolMount) []store.PoolMount { m[0].Mounted = false; return m },
		"reason":      func(m []store.PoolMount) []store.PoolMount { m[1].Reason = "no marker"; return m },
		"free bytes":  func(m []store.PoolMount) []store.PoolMount { m[2].FreeBytes--; return m },
		"total bytes": func(m []store.PoolMount) []store.PoolMount { m[0].TotalBytes++; return m },
		"pool":        func(m []store.PoolMount) []store.PoolMount { m[1].PoolID = "p4"; return m },
		"a mount more": func(m []store.PoolMount) []store.PoolMount {
			return append(m, store.PoolMount{PoolID: "p1"})
		},
		"none": func([]store.PoolMount) []store.PoolMount { return nil },
	} {
		d := mountsDigest(change(slices.Clone(mounts)))
		if other, ok := seen[d]; ok {
			t.Errorf("mounts with %s changed have the digest of mounts %s", name, other)
		}
		seen[d] = name + " changed"
	}
}
