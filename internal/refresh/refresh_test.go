package refresh

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quarry-project/quarry/internal/catalog"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// End-to-end behaviour (real agent, origin, downloads) is tested in
// internal/e2e (TestCatalogRefresh*); these tests cover the decisions.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestChangedFrom(t *testing.T) {
	hexA, hexB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	da, db := "sha256:"+hexA, "sha256:"+hexB
	sha512 := "sha512:" + strings.Repeat("c", 128)
	known := store.CatalogBuild{ImageID: "im1", ETag: `"e1"`, LastModified: "Wed, 01 Jan 2025 01:00:00 GMT", Digest: da}
	for _, tt := range []struct {
		name    string
		up      upstream
		cur     store.CatalogBuild
		im      store.Image
		changed bool
		why     string
	}{
		{"new digest", upstream{ETag: `"e2"`, Digest: db}, known, store.Image{}, true, "the checksum file lists"},
		{"same digest, new validators", upstream{ETag: `"e2"`, Digest: da}, known, store.Image{}, false, "lists the current build's digest"},
		{"304 and same digest", upstream{NotModified: true, ETag: `"e1"`, Digest: da}, known, store.Image{}, false, "(304 Not Modified)"},
		{"304 but a new digest", upstream{NotModified: true, ETag: `"e1"`, Digest: db}, known, store.Image{}, true, "the checksum file lists"},
		{"adopted: image digest differs", upstream{ETag: `"e9"`, Digest: db}, store.CatalogBuild{ImageID: "im1"}, store.Image{SHA256: hexA}, true, "the current build is sha256:aaaa"},
		{"adopted: image digest same", upstream{ETag: `"e9"`, Digest: da}, store.CatalogBuild{ImageID: "im1"}, store.Image{SHA256: hexA}, false, "unchanged"},
		{"adopted, sha512 file: learns validators", upstream{ETag: `"e9"`, Digest: sha512}, store.CatalogBuild{ImageID: "im1"}, store.Image{SHA256: hexA}, false, "validators were not known"},
		{"no checksum file, 304", upstream{NotModified: true, ETag: `"e1"`}, known, store.Image{}, false, "304"},
		{"no checksum file, new ETag", upstream{ETag: `"e2"`, LastModified: known.LastModified}, known, store.Image{}, true, `ETag "e1" → "e2"`},
		{"no checksum file, new date only", upstream{LastModified: "Thu, 02 Jan 2025 01:00:00 GMT"}, store.CatalogBuild{LastModified: known.LastModified}, store.Image{}, true, "Last-Modified"},
		{"no checksum file, same validators", upstream{ETag: `"e1"`, LastModified: known.LastModified}, store.CatalogBuild{ETag: `"e1"`, LastModified: known.LastModified}, store.Image{}, false, "same validators"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			changed, why := tt.up.changedFrom(tt.cur, tt.im)
			if changed != tt.changed || !strings.Contains(why, tt.why) {
				t.Errorf("changedFrom = %v, %q; want %v, containing %q", changed, why, tt.changed, tt.why)
			}
		})
	}
}

// deletions records the files prune removes; the node link is not under
// test here.
type deletions struct{ paths []string }

func (d *deletions) DeleteFile(_ context.Context, _ store.Pool, relPath string) error {
	d.paths = append(d.paths, relPath)
	return nil
}

// TestPruneKeepsWhatIsUsed: with Keep 2 the current build and the newest
// other stay; of the older ones, a build an active job uses stays (and the
// result says why), the others go with their files; builds not READY are
// not counted nor touched.
func TestPruneKeepsWhatIsUsed(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	pool := store.Pool{ID: "p1", Name: "pool", Type: "dir", Path: "/srv/pool", CreatedAt: t0}
	if err := st.CreatePool(ctx, pool); err != nil {
		t.Fatal(err)
	}
	// b5 is current; b4 the newest other; b3 is MISSING; b2 is used by a
	// running job; b1 is free.
	states := map[string]store.ImageState{"b1": store.ImageReady, "b2": store.ImageReady, "b3": store.ImageMissing, "b4": store.ImageReady, "b5": store.ImageReady}
	for i, id := range []string{"b1", "b2", "b3", "b4", "b5"} {
		at := t0.Add(time.Duration(i) * time.Hour)
		if err := st.CreateImage(ctx, store.Image{ID: id, PoolID: "p1", Name: id + ".img", Kind: store.KindCloudImage, State: states[id],
			RelPath: "images/" + id + ".img", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutCatalogBuild(ctx, store.CatalogBuild{ImageID: id, CatalogID: "e", PoolID: "p1", Build: id, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateJob(ctx, store.Job{ID: "j1", Kind: "verify", State: store.JobQueued, ImageID: "b2", PoolID: "p1", Source: "verify:b2", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	files := &deletions{}
	c := New(Config{Store: st, Keep: 2, Files: files})
	r := store.CatalogRefresh{CatalogID: "e", PoolID: "p1", CurrentImageID: "b5"}
	c.prune(ctx, &r, pool)

	if !slices.Equal(files.paths, []string{"images/b1.img"}) {
		t.Errorf("deleted %v; want only images/b1.img", files.paths)
	}
	builds, err := st.ListCatalogBuilds(ctx, "e", "p1")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, b := range builds {
		left = append(left, b.ImageID)
	}
	if !slices.Equal(left, []string{"b5", "b4", "b3", "b2"}) {
		t.Errorf("builds left %v", left)
	}
	if _, err := st.GetImage(ctx, "b1"); err == nil {
		t.Errorf("b1's record is still there")
	}
	if !strings.Contains(r.Result, "deleted old build b1.img") || !strings.Contains(r.Result, "b2.img is kept while job j1 uses it") {
		t.Errorf("result %q", r.Result)
	}
}

// TestAskFallsBackToGET: a mirror that refuses HEAD is asked with a
// conditional GET of one byte, whose answer gives the validators.
func TestAskFallsBackToGET(t *testing.T) {
	var gets []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			http.Error(w, "no HEAD here", http.StatusMethodNotAllowed)
			return
		}
		gets = append(gets, r.Header.Clone())
		w.Header().Set("ETag", `"v2"`)
		w.Header().Set("Content-Range", "bytes 0-0/100")
		w.WriteHeader(http.StatusPartialContent)
		w.Write([]byte{0})
	}))
	defer srv.Close()
	up, err := ask(t.Context(), srv.Client(), catalog.Entry{ID: "e", URL: srv.URL + "/img"}, store.CatalogBuild{ETag: `"v1"`})
	if err != nil {
		t.Fatal(err)
	}
	if up.ETag != `"v2"` || up.NotModified || len(gets) != 1 || gets[0].Get("Range") != "bytes=0-0" || gets[0].Get("If-None-Match") != `"v1"` {
		t.Errorf("ask = %+v; GET headers %v", up, gets)
	}
	if changed, why := up.changedFrom(store.CatalogBuild{ETag: `"v1"`}, store.Image{}); !changed {
		t.Errorf("a new ETag is not a change: %s", why)
	}
}
