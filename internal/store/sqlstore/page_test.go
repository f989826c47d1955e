package sqlstore

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/pgtest"
)

// A page token holds its whole position: a list begun on one store
// continues on another store over the same database, as it does on another
// control-plane replica.
func testPageTokenAcrossStores(t *testing.T, open func(t *testing.T) *Store) {
	ctx := context.Background()
	a, b := open(t), open(t)
	p := store.Pool{ID: "p1", Name: "pool-p1", Type: "dir", Path: "/srv/p1"}
	if err := a.CreatePool(ctx, p); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 7 {
		im := store.Image{ID: fmt.Sprintf("im%d", i), PoolID: "p1", Name: "x", Kind: store.KindISO,
			State: store.ImageReady, RelPath: fmt.Sprintf("iso/%d.iso", i)}
		if err := a.CreateImage(ctx, im); err != nil {
			t.Fatal(err)
		}
		want = append(want, im.ID)
	}
	var (
		got   []string
		token string
	)
	for i, s := range []*Store{a, b, a, b} {
		ims, next, err := s.ListImagesPage(ctx, store.ImageFilter{Kind: store.KindISO}, store.Page{Size: 2, Token: token})
		if err != nil {
			t.Fatalf("page %d: %v", i+1, err)
		}
		for _, im := range ims {
			got = append(got, im.ID)
		}
		if token = next; token == "" {
			break
		}
	}
	if !slices.Equal(got, want) || token != "" {
		t.Errorf("pages read alternately from two stores = %v (last token %q), want %v and no token", got, token, want)
	}
}

func TestSQLitePageTokenAcrossStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quarry.db")
	testPageTokenAcrossStores(t, func(t *testing.T) *Store {
		s := openSQLite(t, path)
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestPostgresPageTokenAcrossStores(t *testing.T) {
	testPageTokenAcrossStores(t, postgresAt(pgtest.NewDatabase(t)))
}
