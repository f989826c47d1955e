package sqlstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/pgtest"
)

// benchPages fills a store with 100,000 images in 1,000 pools and prints
// how long a page of 100 takes: the first, one deep in the list, and under
// each filter. It prints figures, it asserts no time budget.
func benchPages(t *testing.T, s *Store) {
	if os.Getenv("QUARRY_BENCH") == "" {
		t.Skip("set QUARRY_BENCH=1 to run")
	}
	ctx := context.Background()
	const pools, perPool = 1000, 100
	start := time.Now()
	for p := range pools {
		pool := store.Pool{ID: fmt.Sprintf("pool-%04d", p), Name: fmt.Sprintf("p%04d", p), Type: "dir", Path: fmt.Sprintf("/srv/p%04d", p)}
		if err := s.CreatePool(ctx, pool); err != nil {
			t.Fatal(err)
		}
		var c store.ScanChanges
		for i := range perPool {
			im := store.Image{ID: fmt.Sprintf("im-%04d-%03d", p, i), Name: fmt.Sprintf("file-%04d-%03d.iso", p, i),
				Kind: store.KindISO, State: store.ImageReady, RelPath: fmt.Sprintf("iso/%03d.iso", i), Origin: store.OriginDiscovered}
			if i%10 == 0 {
				im.Kind, im.RelPath = store.KindCloudImage, fmt.Sprintf("images/%03d.qcow2", i)
			}
			if i%50 == 0 {
				im.State = store.ImageMissing
			}
			c.Create = append(c.Create, im)
		}
		if _, err := s.ApplyScan(ctx, pool.ID, c); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%s: 100,000 images in %v", s.d.Name, time.Since(start).Round(time.Millisecond))

	// deep is a token 50,000 rows into the list.
	var deep string
	for range 50 {
		_, next, err := s.ListImagesPage(ctx, store.ImageFilter{}, store.Page{Size: 1000, Token: deep})
		if err != nil {
			t.Fatal(err)
		}
		deep = next
	}
	for _, c := range []struct {
		what  string
		f     store.ImageFilter
		token string
	}{
		{"first page", store.ImageFilter{}, ""},
		{"page 501", store.ImageFilter{}, deep},
		{"one pool", store.ImageFilter{PoolID: "pool-0500"}, ""},
		{"kind cloud image (10%)", store.ImageFilter{Kind: store.KindCloudImage}, ""},
		{"state missing (2%)", store.ImageFilter{State: store.ImageMissing}, ""},
		{"search, 1 match", store.ImageFilter{Search: "file-0999-099"}, ""},
	} {
		var lat []time.Duration
		for range 50 {
			t0 := time.Now()
			if _, _, err := s.ListImagesPage(ctx, c.f, store.Page{Size: 100, Token: c.token}); err != nil {
				t.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		t.Logf("%s: ListImagesPage(100), %-24s p50 %8v  p99 %8v", s.d.Name, c.what,
			lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond))
	}
}

func TestBenchmarkSQLitePages(t *testing.T) {
	benchPages(t, openSQLite(t, filepath.Join(t.TempDir(), "quarry.db")))
}

func TestBenchmarkPostgresPages(t *testing.T) {
	if os.Getenv("QUARRY_BENCH") == "" {
		t.Skip("set QUARRY_BENCH=1 to run")
	}
	benchPages(t, openPostgres(t, pgtest.NewDatabase(t)))
}
