package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/store"
)

// lister reads one page of some list.
type lister[T any] func(p store.Page) ([]T, string, error)

// walk reads every page of a list, size rows at a time, and returns the
// rows in order and how many pages it took. It fails the test when a page
// other than the last is short, or the last page has a token.
func walk[T any](t *testing.T, list lister[T], size int) ([]T, int) {
	t.Helper()
	var (
		all   []T
		token string
	)
	for pages := 1; ; pages++ {
		if pages > 10000 {
			t.Fatal("more than 10000 pages: the token does not advance")
		}
		rows, next, err := list(store.Page{Size: size, Token: token})
		if err != nil {
			t.Fatalf("page %d (size %d): %v", pages, size, err)
		}
		all = append(all, rows...)
		if next == "" {
			return all, pages
		}
		if len(rows) != size {
			t.Fatalf("page %d has %d rows and a next token, want %d rows", pages, len(rows), size)
		}
		token = next
	}
}

// wantPages checks that walking a list size rows a page returns exactly
// want, in order, in as few pages as possible (no empty last page).
func wantPages[T any](t *testing.T, what string, list lister[T], size int, want []T, id func(T) string) {
	t.Helper()
	got, pages := walk(t, list, size)
	wantPages := max(1, (len(want)+size-1)/size)
	gotIDs, wantIDs := ids(got, id), ids(want, id)
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("%s, %d a page:\n got %v\nwant %v", what, size, gotIDs, wantIDs)
	}
	if pages != wantPages {
		t.Errorf("%s, %d a page: %d pages for %d rows, want %d", what, size, pages, len(want), wantPages)
	}
}

func ids[T any](rows []T, id func(T) string) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = id(r)
	}
	return out
}

func imageID(im store.Image) string     { return im.ID }
func jobID(j store.Job) string          { return j.ID }
func nodeID(n store.Node) string        { return n.ID }
func auditID(e store.AuditEntry) string { return fmt.Sprint(e.ID) }

func imagePages(s store.Store, f store.ImageFilter) lister[store.Image] {
	return func(p store.Page) ([]store.Image, string, error) {
		return s.ListImagesPage(context.Background(), f, p)
	}
}

func jobPages(s store.Store, f store.JobFilter) lister[store.Job] {
	return func(p store.Page) ([]store.Job, string, error) { return s.ListJobsPage(context.Background(), f, p) }
}

func nodePages(s store.Store, f store.NodeFilter) lister[store.Node] {
	return func(p store.Page) ([]store.Node, string, error) { return s.ListNodesPage(context.Background(), f, p) }
}

func auditPages(s store.Store, f store.AuditFilter) lister[store.AuditEntry] {
	return func(p store.Page) ([]store.AuditEntry, string, error) {
		return s.ListAuditPage(context.Background(), f, p)
	}
}

func filterImages(ims []store.Image, keep func(store.Image) bool) []store.Image {
	var out []store.Image
	for _, im := range ims {
		if keep(im) {
			out = append(out, im)
		}
	}
	return out
}

func testPaging(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("images: every filter, every page size", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		var all []store.Image
		for i := range 23 {
			im := image(fmt.Sprintf("im%02d", i), []string{"p1", "p2"}[i%2], fmt.Sprintf("iso/f%02d.iso", (i*7)%23))
			if i%3 == 0 {
				im.Kind, im.RelPath = store.KindCloudImage, fmt.Sprintf("images/c%02d.qcow2", i)
			}
			if i%4 == 0 {
				im.State = store.ImageMissing
			}
			switch i {
			case 5:
				im.Name = "Ubuntu 100%_Server"
			case 6:
				im.Name = "ubuntu 100x server"
			case 7:
				im.VolumeLabel = "UBUNTU 100%_SERVER"
			}
			mustCreateImages(t, s, im)
			all = append(all, im)
		}
		ordered := mustListImages(t, s, store.ImageFilter{})
		if len(ordered) != len(all) {
			t.Fatalf("ListImages = %d images, want %d", len(ordered), len(all))
		}
		for i := 1; i < len(ordered); i++ {
			a, b := ordered[i-1], ordered[i]
			if a.PoolID > b.PoolID || a.PoolID == b.PoolID && a.RelPath >= b.RelPath {
				t.Fatalf("ListImages not ordered by pool, then path: %s:%s before %s:%s", a.PoolID, a.RelPath, b.PoolID, b.RelPath)
			}
		}
		for _, size := range []int{1, 5, 23, 100} {
			wantPages(t, "all images", imagePages(s, store.ImageFilter{}), size, ordered, imageID)
		}
		page, _, err := s.ListImagesPage(ctx, store.ImageFilter{}, store.Page{Size: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range page {
			if want := pool(im.PoolID).Name; im.PoolName != want {
				t.Errorf("ListImagesPage: image %s has pool name %q, want %q", im.ID, im.PoolName, want)
			}
		}
		filters := []struct {
			f    store.ImageFilter
			keep func(store.Image) bool
		}{
			{store.ImageFilter{PoolID: "p2"}, func(im store.Image) bool { return im.PoolID == "p2" }},
			{store.ImageFilter{Kind: store.KindCloudImage}, func(im store.Image) bool { return im.Kind == store.KindCloudImage }},
			{store.ImageFilter{State: store.ImageMissing}, func(im store.Image) bool { return im.State == store.ImageMissing }},
			{store.ImageFilter{PoolID: "p1", Kind: store.KindISO, State: store.ImageReady}, func(im store.Image) bool {
				return im.PoolID == "p1" && im.Kind == store.KindISO && im.State == store.ImageReady
			}},
			// % and _ are text, not wildcards; ASCII case does not matter;
			// name, path and volume label are searched.
			{store.ImageFilter{Search: "100%_s"}, func(im store.Image) bool { return im.ID == "im05" || im.ID == "im07" }},
			{store.ImageFilter{Search: "UBUNTU 100"}, func(im store.Image) bool { return im.ID == "im05" || im.ID == "im06" || im.ID == "im07" }},
			{store.ImageFilter{Search: "/c1"}, func(im store.Image) bool {
				return im.RelPath == "images/c12.qcow2" || im.RelPath == "images/c15.qcow2" || im.RelPath == "images/c18.qcow2"
			}},
			{store.ImageFilter{Search: "LABEL_IM2"}, func(im store.Image) bool { return im.ID >= "im20" && im.VolumeLabel != "UBUNTU 100%_SERVER" }},
			{store.ImageFilter{Search: "no such image"}, func(store.Image) bool { return false }},
		}
		for _, c := range filters {
			want := filterImages(ordered, c.keep)
			if len(want) == 0 && c.f.Search != "no such image" {
				t.Fatalf("filter %+v: the fixture has no match", c.f)
			}
			wantEqual(t, fmt.Sprintf("ListImages(%+v)", c.f), ids(mustListImages(t, s, c.f), imageID), ids(want, imageID))
			for _, size := range []int{2, 3, 100} {
				wantPages(t, fmt.Sprintf("images %+v", c.f), imagePages(s, c.f), size, want, imageID)
			}
		}
	})

	t.Run("jobs: newest first, ties by id, every filter", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		mustCreateNodes(t, s, "n1")
		var want []store.Job
		for i := range 17 {
			id := fmt.Sprintf("j%02d", i)
			im, j := download(id, "im"+id, []string{"p1", "p2"}[i%2], "src-"+id)
			// Pairs share a creation time, so ties need the id.
			j.CreatedAt = at(time.Duration(i/2) * time.Second)
			if i%5 == 0 {
				j.Kind, im.State = "upload", store.ImageUploading
			}
			mustCreateDownload(t, s, im, j)
			if i%3 == 0 {
				j = mustClaimJob(t, s, id, "n1", at(time.Hour))
			}
			want = append(want, j)
		}
		slices.Reverse(want)
		wantEqual(t, "ListJobs", ids(mustListJobs(t, s, store.JobFilter{}), jobID), ids(want, jobID))
		for _, size := range []int{1, 4, 17} {
			wantPages(t, "all jobs", jobPages(s, store.JobFilter{}), size, want, jobID)
		}
		filters := []struct {
			f    store.JobFilter
			keep func(store.Job) bool
		}{
			{store.JobFilter{PoolID: "p1"}, func(j store.Job) bool { return j.PoolID == "p1" }},
			{store.JobFilter{Kind: "upload"}, func(j store.Job) bool { return j.Kind == "upload" }},
			{store.JobFilter{NodeID: "n1"}, func(j store.Job) bool { return j.NodeID == "n1" }},
			{store.JobFilter{ImageID: "imj04"}, func(j store.Job) bool { return j.ImageID == "imj04" }},
			{store.JobFilter{States: []store.JobState{store.JobQueued}, PoolID: "p2"}, func(j store.Job) bool {
				return j.State == store.JobQueued && j.PoolID == "p2"
			}},
		}
		for _, c := range filters {
			var fw []store.Job
			for _, j := range want {
				if c.keep(j) {
					fw = append(fw, j)
				}
			}
			if len(fw) == 0 {
				t.Fatalf("filter %+v: the fixture has no match", c.f)
			}
			wantEqual(t, fmt.Sprintf("ListJobs(%+v)", c.f), ids(mustListJobs(t, s, c.f), jobID), ids(fw, jobID))
			wantPages(t, fmt.Sprintf("jobs %+v", c.f), jobPages(s, c.f), 2, fw, jobID)
		}
	})

	t.Run("nodes: by name, state and search", func(t *testing.T) {
		s := open(t)
		var want []store.Node
		for i := range 12 {
			n := node(fmt.Sprintf("n%d", i+1))
			n.Name = fmt.Sprintf("kvm-%02d", (i*5)%12)
			mustCreate(t, s, n)
			if i%2 == 0 {
				st := store.NodeStatus{State: store.NodeReady, StateSince: at(time.Second), LastCheckedAt: at(time.Second),
					Hostname: fmt.Sprintf("Rack%d.example", i%3)}
				if err := s.RecordNodeCheck(ctx, n.ID, st, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
		want = mustListNodesAll(t, s)
		for i := 1; i < len(want); i++ {
			if want[i-1].Name >= want[i].Name {
				t.Fatalf("ListNodes not ordered by name: %s before %s", want[i-1].Name, want[i].Name)
			}
		}
		for _, size := range []int{1, 5, 12} {
			wantPages(t, "all nodes", nodePages(s, store.NodeFilter{}), size, want, nodeID)
		}
		keep := func(f func(store.Node) bool) []store.Node {
			var out []store.Node
			for _, n := range want {
				if f(n) {
					out = append(out, n)
				}
			}
			if len(out) == 0 {
				t.Fatal("the fixture has no match")
			}
			return out
		}
		wantPages(t, "READY nodes", nodePages(s, store.NodeFilter{State: store.NodeReady}), 2,
			keep(func(n store.Node) bool { return n.State == store.NodeReady }), nodeID)
		wantPages(t, "nodes on rack1", nodePages(s, store.NodeFilter{Search: "rACK1"}), 1,
			keep(func(n store.Node) bool { return n.Hostname == "Rack1.example" }), nodeID)
		wantPages(t, "nodes at 10.0.0.1x", nodePages(s, store.NodeFilter{Search: "10.0.0.1"}), 2,
			keep(func(n store.Node) bool { return n.ID == "n1" || n.ID == "n10" || n.ID == "n11" || n.ID == "n12" }), nodeID)
	})

	t.Run("audit: newest first, result and search filters, before id", func(t *testing.T) {
		s := open(t)
		var all []store.AuditEntry
		for i := range 15 {
			e := auditEntry(i)
			switch i % 3 {
			case 1:
				e.Result, e.Message = "permission_denied", "needs the operator role"
			case 2:
				e.Result, e.Message = "not_found", "no node has id n9"
			}
			id, err := s.AppendAudit(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			e.ID = id
			all = append(all, e)
		}
		all = newestFirst(all)
		keep := func(f func(store.AuditEntry) bool) []store.AuditEntry {
			var out []store.AuditEntry
			for _, e := range all {
				if f(e) {
					out = append(out, e)
				}
			}
			return out
		}
		for _, size := range []int{1, 4, 15} {
			wantPages(t, "audit", auditPages(s, store.AuditFilter{}), size, all, auditID)
		}
		wantPages(t, "audit ok", auditPages(s, store.AuditFilter{Result: "ok"}), 2,
			keep(func(e store.AuditEntry) bool { return e.Result == "ok" }), auditID)
		wantPages(t, "audit error", auditPages(s, store.AuditFilter{Result: "error"}), 3,
			keep(func(e store.AuditEntry) bool { return e.Result != "ok" }), auditID)
		wantPages(t, "audit not_found", auditPages(s, store.AuditFilter{Result: "not_found"}), 2,
			keep(func(e store.AuditEntry) bool { return e.Result == "not_found" }), auditID)
		wantPages(t, "audit search", auditPages(s, store.AuditFilter{Search: "OPERATOR ROLE"}), 2,
			keep(func(e store.AuditEntry) bool { return e.Result == "permission_denied" }), auditID)
		wantPages(t, "audit search actor", auditPages(s, store.AuditFilter{Search: "token:t1"}), 2,
			keep(func(e store.AuditEntry) bool { return strings.HasPrefix(e.Actor, "token:t1") }), auditID)
		// before id bounds the first page; the token carries on below it,
		// and a token does not depend on it.
		before := all[4].ID
		wantPages(t, "audit before id", auditPages(s, store.AuditFilter{BeforeID: before}), 3, all[5:], auditID)
		_, next, err := s.ListAuditPage(ctx, store.AuditFilter{BeforeID: before}, store.Page{Size: 3})
		if err != nil {
			t.Fatal(err)
		}
		rest, _, err := s.ListAuditPage(ctx, store.AuditFilter{}, store.Page{Size: 3, Token: next})
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "page after a before-id page", ids(rest, auditID), ids(all[8:11], auditID))
	})

	t.Run("page sizes and bad tokens", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		for i := range 3 {
			mustCreateImages(t, s, image(fmt.Sprintf("im%d", i), "p1", fmt.Sprintf("iso/%d.iso", i)))
		}
		// Default and maximum sizes hold every row here; there is no next page.
		for _, size := range []int{0, store.MaxPageSize} {
			rows, next, err := s.ListImagesPage(ctx, store.ImageFilter{}, store.Page{Size: size})
			if err != nil || len(rows) != 3 || next != "" {
				t.Errorf("ListImagesPage(size %d) = %d rows, next %q, %v; want 3 rows, no next page", size, len(rows), next, err)
			}
		}
		_, tok, err := s.ListImagesPage(ctx, store.ImageFilter{}, store.Page{Size: 1})
		if err != nil || tok == "" {
			t.Fatalf("first page of 1: token %q, %v", tok, err)
		}
		_, nodeTok, err := s.ListImagesPage(ctx, store.ImageFilter{PoolID: "p1"}, store.Page{Size: 1})
		if err != nil || nodeTok == "" {
			t.Fatalf("first page of 1 in p1: token %q, %v", nodeTok, err)
		}
		bad := []struct {
			what string
			call func() error
		}{
			{"page size above the maximum", func() error {
				_, _, err := s.ListImagesPage(ctx, store.ImageFilter{}, store.Page{Size: store.MaxPageSize + 1})
				return err
			}},
			{"negative page size", func() error {
				_, _, err := s.ListJobsPage(ctx, store.JobFilter{}, store.Page{Size: -1})
				return err
			}},
			{"garbage token", func() error {
				_, _, err := s.ListImagesPage(ctx, store.ImageFilter{}, store.Page{Token: "not a token!"})
				return err
			}},
			{"base64 of something else", func() error {
				_, _, err := s.ListNodesPage(ctx, store.NodeFilter{}, store.Page{Token: "eyJhIjoxfQ"})
				return err
			}},
			{"token cut short", func() error {
				_, _, err := s.ListImagesPage(ctx, store.ImageFilter{}, store.Page{Token: tok[:len(tok)/2]})
				return err
			}},
			{"token of another list", func() error {
				_, _, err := s.ListJobsPage(ctx, store.JobFilter{}, store.Page{Token: tok})
				return err
			}},
			{"token of another list (audit)", func() error {
				_, _, err := s.ListAuditPage(ctx, store.AuditFilter{}, store.Page{Token: tok})
				return err
			}},
			{"token given with other filters", func() error {
				_, _, err := s.ListImagesPage(ctx, store.ImageFilter{Kind: store.KindISO}, store.Page{Token: tok})
				return err
			}},
			{"token given without its filters", func() error {
				_, _, err := s.ListImagesPage(ctx, store.ImageFilter{}, store.Page{Token: nodeTok})
				return err
			}},
		}
		for _, b := range bad {
			err := b.call()
			if !errors.Is(err, store.ErrInvalid) || errclass.Of(err) != errclass.InvalidArgument {
				t.Errorf("%s: err = %v, want ErrInvalid (invalid argument)", b.what, err)
			}
		}
	})
}

func mustListNodesAll(t *testing.T, s store.Store) []store.Node {
	t.Helper()
	ns, err := s.ListNodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// testPagingConcurrentInserts walks lists a few rows a page while other
// goroutines insert rows all over them: every row present before the walk
// comes back exactly once, in order, and nothing comes back twice.
func testPagingConcurrentInserts(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("images", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		mustCreatePool(t, s, pool("p2"))
		before := map[string]bool{}
		for i := range 40 {
			im := image(fmt.Sprintf("old%02d", i), []string{"p1", "p2"}[i%2], fmt.Sprintf("iso/%03d.iso", i*10))
			mustCreateImages(t, s, im)
			before[im.ID] = true
		}
		// New files land between, before and after the old ones, in both
		// pools, while the walk goes on.
		got := walkWhile(t, imagePages(s, store.ImageFilter{}), 3, func(i int) error {
			return s.CreateImage(ctx, image(fmt.Sprintf("new%03d", i), []string{"p1", "p2"}[i%2], fmt.Sprintf("iso/%03d-%03d.iso", (i*37)%400, i)))
		})
		for i := 1; i < len(got); i++ {
			a, b := got[i-1], got[i]
			if a.PoolID > b.PoolID || a.PoolID == b.PoolID && a.RelPath >= b.RelPath {
				t.Fatalf("walk out of order: %s:%s before %s:%s", a.PoolID, a.RelPath, b.PoolID, b.RelPath)
			}
		}
		wantOnce(t, ids(got, imageID), before)
	})

	t.Run("jobs", func(t *testing.T) {
		s := open(t)
		mustCreatePool(t, s, pool("p1"))
		before := map[string]bool{}
		for i := range 30 {
			id := fmt.Sprintf("old%02d", i)
			im, j := download(id, "im"+id, "p1", "src-"+id)
			j.CreatedAt = at(time.Duration(i/3) * time.Second) // ties too
			mustCreateDownload(t, s, im, j)
			before[id] = true
		}
		got := walkWhile(t, jobPages(s, store.JobFilter{}), 4, func(i int) error {
			id := fmt.Sprintf("new%03d", i)
			im, j := download(id, "im"+id, "p1", "src-"+id)
			// Created now, and, as a clock step back or a slow writer
			// could, amid the old ones.
			j.CreatedAt = at(time.Duration(i%12) * time.Second)
			_, err := s.CreateDownload(ctx, im, j)
			return err
		})
		wantOnce(t, ids(got, jobID), before)
	})

	t.Run("nodes", func(t *testing.T) {
		s := open(t)
		before := map[string]bool{}
		for i := range 20 {
			n := node(fmt.Sprintf("n%d", i+1))
			n.Name = fmt.Sprintf("kvm-%03d", i*10)
			mustCreate(t, s, n)
			before[n.ID] = true
		}
		got := walkWhile(t, nodePages(s, store.NodeFilter{}), 3, func(i int) error {
			n := node(fmt.Sprintf("n%d", 100+i))
			n.Name = fmt.Sprintf("kvm-%03d-%03d", (i*37)%200, i)
			return s.CreateNode(ctx, n)
		})
		wantOnce(t, ids(got, nodeID), before)
	})

	t.Run("audit", func(t *testing.T) {
		s := open(t)
		before := map[string]bool{}
		for _, e := range appendAudit(t, s, 30) {
			before[auditID(e)] = true
		}
		got := walkWhile(t, auditPages(s, store.AuditFilter{}), 4, func(i int) error {
			_, err := s.AppendAudit(ctx, auditEntry(100+i))
			return err
		})
		wantOnce(t, ids(got, auditID), before)
	})
}

// walkWhile walks list size rows a page while two goroutines call insert
// with increasing numbers (400 at most); between two pages it waits until
// one more row was inserted, so inserts really interleave with the walk.
// It returns what the walk read.
func walkWhile[T any](t *testing.T, list lister[T], size int, insert func(i int) error) []T {
	t.Helper()
	const most = 400
	var (
		mu       sync.Mutex
		next     int
		inserted = make(chan struct{}, 1) // a row was inserted since the last receive
		finished = make(chan struct{})    // the inserters stopped
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		errs     = make(chan error, 2)
		total    int
	)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				select {
				case <-stop:
					return
				default:
				}
				if i >= most {
					return
				}
				if err := insert(i); err != nil {
					errs <- fmt.Errorf("insert %d: %w", i, err)
					return
				}
				mu.Lock()
				total++
				mu.Unlock()
				select {
				case inserted <- struct{}{}:
				default:
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(finished)
	}()
	defer func() {
		close(stop)
		<-finished
	}()
	var (
		all   []T
		token string
	)
	for pages := 1; ; pages++ {
		if pages > 10000 {
			t.Fatal("more than 10000 pages: the token does not advance")
		}
		select {
		case <-inserted: // only inserts after this count as "during the page"
		default:
		}
		rows, nextTok, err := list(store.Page{Size: size, Token: token})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		all = append(all, rows...)
		if nextTok == "" {
			break
		}
		token = nextTok
		select {
		case <-inserted:
		case <-finished:
		case err := <-errs:
			t.Fatal(err)
		}
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	mu.Lock()
	n := total
	mu.Unlock()
	if n == 0 {
		t.Fatal("nothing was inserted during the walk")
	}
	return all
}

// wantOnce checks that got has no repeats and holds every id of before.
func wantOnce(t *testing.T, got []string, before map[string]bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			t.Errorf("%s came back twice", id)
		}
		seen[id] = true
	}
	for id := range before {
		if !seen[id] {
			t.Errorf("%s, present before the walk, never came back", id)
		}
	}
}
