package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// TestPaging walks 250 images through the public API and the CLI: pages of
// the default size, filters on the server, bad sizes and tokens refused with
// invalid_argument, and the CLI's --limit and --all.
func TestPaging(t *testing.T) {
	s := quarrytest.StartServer(t)
	ctx := t.Context()
	useToken(s.URL, s.AdminToken)
	pool := store.Pool{ID: "pool-paging", Name: "paging", Type: "dir", Path: "/srv/paging", CreatedAt: time.Now()}
	if err := s.Store.CreatePool(ctx, pool); err != nil {
		t.Fatal(err)
	}
	const total = 250
	for i := range total {
		im := store.Image{ID: fmt.Sprintf("im-%03d", i), PoolID: pool.ID, Name: fmt.Sprintf("disk-%03d", i),
			Kind: store.KindDisk, Format: "qcow2", State: store.ImageReady, RelPath: fmt.Sprintf("images/%03d.qcow2", i),
			Origin: store.OriginDiscovered, CreatedAt: time.Now()}
		if i%10 == 0 {
			im.Kind, im.Format, im.RelPath, im.Name = store.KindISO, "iso", fmt.Sprintf("iso/%03d.iso", i), fmt.Sprintf("Ubuntu-%03d", i)
		}
		if i%25 == 0 {
			im.State = store.ImageMissing
		}
		if err := s.Store.CreateImage(ctx, im); err != nil {
			t.Fatal(err)
		}
	}

	list := func(req *quarryv1.ListImagesRequest) (*quarryv1.ListImagesResponse, error) {
		resp, err := s.Images.ListImages(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	walk := func(req *quarryv1.ListImagesRequest) (ids []string, pages int) {
		t.Helper()
		for {
			resp, err := list(req)
			if err != nil {
				t.Fatalf("ListImages(%v): %v", req, err)
			}
			pages++
			for _, im := range resp.GetImages() {
				ids = append(ids, im.GetId())
			}
			if resp.GetNextPageToken() == "" {
				return ids, pages
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}

	t.Run("default page size", func(t *testing.T) {
		first, err := list(&quarryv1.ListImagesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(first.GetImages()) != 100 || first.GetNextPageToken() == "" {
			t.Fatalf("first page: %d images, next token %q; want 100 and a token", len(first.GetImages()), first.GetNextPageToken())
		}
		ids, pages := walk(&quarryv1.ListImagesRequest{})
		seen := map[string]bool{}
		for _, id := range ids {
			seen[id] = true
		}
		if len(ids) != total || len(seen) != total || pages != 3 {
			t.Errorf("walk: %d ids (%d distinct) in %d pages, want %d in 3", len(ids), len(seen), pages, total)
		}
	})

	t.Run("filters", func(t *testing.T) {
		for _, c := range []struct {
			req  *quarryv1.ListImagesRequest
			want int
		}{
			{&quarryv1.ListImagesRequest{Kind: quarryv1.ImageKind_IMAGE_KIND_ISO, PageSize: 7}, 25},
			{&quarryv1.ListImagesRequest{State: quarryv1.ImageState_IMAGE_STATE_MISSING, PageSize: 3}, 10},
			{&quarryv1.ListImagesRequest{Search: "ubuntu-1", PageSize: 4}, 10},
			{&quarryv1.ListImagesRequest{StoragePoolId: pool.ID, Kind: quarryv1.ImageKind_IMAGE_KIND_ISO,
				State: quarryv1.ImageState_IMAGE_STATE_MISSING}, 5},
		} {
			ids, _ := walk(c.req)
			if len(ids) != c.want {
				t.Errorf("ListImages(%v): %d images, want %d", c.req, len(ids), c.want)
			}
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		first, err := list(&quarryv1.ListImagesRequest{PageSize: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			req  *quarryv1.ListImagesRequest
			want string
		}{
			{&quarryv1.ListImagesRequest{PageSize: 1001}, "more than 1000"},
			{&quarryv1.ListImagesRequest{PageSize: -1}, "negative"},
			{&quarryv1.ListImagesRequest{PageToken: "garbage"}, "not a token this server gave out"},
			{&quarryv1.ListImagesRequest{PageToken: first.GetNextPageToken(), Kind: quarryv1.ImageKind_IMAGE_KIND_ISO}, "other filters"},
		} {
			_, err := list(c.req)
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ListImages(%v) = %v, want invalid_argument saying %q", c.req, err, c.want)
			}
		}
		_, err = s.Jobs.ListJobs(ctx, connect.NewRequest(&quarryv1.ListJobsRequest{PageToken: first.GetNextPageToken()}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "list of images, not of jobs") {
			t.Errorf("ListJobs with a token of ListImages = %v, want invalid_argument", err)
		}
	})

	t.Run("other lists", func(t *testing.T) {
		// Creating the nodes writes the audit log too.
		for i := range 3 {
			if _, err := s.Nodes.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{
				Name: fmt.Sprintf("pg-%d", i), ManagementAddress: fmt.Sprintf("10.9.0.%d", i+1)})); err != nil {
				t.Fatal(err)
			}
		}
		var names []string
		req := &quarryv1.ListNodesRequest{PageSize: 2}
		for {
			resp, err := s.Nodes.ListNodes(ctx, connect.NewRequest(req))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range resp.Msg.GetNodes() {
				names = append(names, n.GetName())
			}
			if req.PageToken = resp.Msg.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if strings.Join(names, " ") != "pg-0 pg-1 pg-2" {
			t.Errorf("ListNodes, 2 a page = %v, want pg-0 pg-1 pg-2", names)
		}
		audit, err := s.Audit.ListAudit(ctx, connect.NewRequest(&quarryv1.ListAuditRequest{PageSize: 2, Search: "RegisterNode"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(audit.Msg.GetEntries()) != 2 || audit.Msg.GetNextPageToken() == "" {
			t.Errorf("ListAudit(2 a page, RegisterNode) = %d entries, next %q; want 2 and a token", len(audit.Msg.GetEntries()), audit.Msg.GetNextPageToken())
		}
		jobs, err := s.Jobs.ListJobs(ctx, connect.NewRequest(&quarryv1.ListJobsRequest{Kind: "copy"}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("ListJobs(kind copy) = %v, %v; want invalid_argument", jobs, err)
		}
	})

	t.Run("cli", func(t *testing.T) {
		rows := func(out string) int { return strings.Count(strings.TrimSpace(out), "\n") } // minus the header
		if n := rows(mustQuarry(t, s.URL, "image", "ls")); n != total {
			t.Errorf("image ls: %d rows, want all %d (the default limit is 1000)", n, total)
		}
		r := quarry(t, s.URL, "image", "ls", "--limit", "120")
		if r.code != 0 || rows(r.stdout) != 120 || !strings.Contains(r.stderr, "120 images shown and more remain") {
			t.Errorf("image ls --limit 120: exit %d, %d rows, stderr %q", r.code, rows(r.stdout), r.stderr)
		}
		var resp quarryv1.ListImagesResponse
		if err := protojson.Unmarshal([]byte(mustQuarry(t, s.URL, "image", "ls", "--all", "--kind", "disk", "-o", "json")), &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.GetImages()) != 225 || resp.GetNextPageToken() != "" {
			t.Errorf("image ls --all --kind disk: %d images, next %q; want 225 and none", len(resp.GetImages()), resp.GetNextPageToken())
		}
		if n := rows(mustQuarry(t, s.URL, "image", "ls", "--search", "UBUNTU-2", "--state", "missing")); n != 1 {
			t.Errorf("image ls --search UBUNTU-2 --state missing: %d rows, want 1 (Ubuntu-200)", n)
		}
		if r := quarry(t, s.URL, "image", "ls", "--limit", "0"); r.code != 2 || !strings.Contains(r.stderr, "--limit 0") {
			t.Errorf("image ls --limit 0: exit %d, stderr %q; want a usage error", r.code, r.stderr)
		}
		if r := quarry(t, s.URL, "image", "ls", "--limit", "5", "--all"); r.code != 2 {
			t.Errorf("image ls --limit 5 --all: exit %d, stderr %q; want a usage error", r.code, r.stderr)
		}
	})
}
