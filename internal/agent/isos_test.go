package agent

import (
	"os"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
)

// TestDeleteFileStaysInPool: DeleteFile removes files under iso/ and
// images/ only, never the marker or anything outside the pool, whatever
// the path or symlinks say.
func TestDeleteFileStaysInPool(t *testing.T) {
	root := t.TempDir()
	pool := filepath.Join(root, "srv/isos")
	writeMarkerFile(t, pool, "p1", "isos")
	writeFile(t, filepath.Join(pool, "iso/a.iso"), "a")
	outside := filepath.Join(root, "secret")
	writeFile(t, filepath.Join(outside, "keep.iso"), "keep")
	if err := os.Symlink(outside, filepath.Join(pool, "iso/escape")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "srv/other/x.iso"), "x")

	a := startAgent(t, Config{FSRoot: root})
	c := protocols[1].client(t, a)
	del := func(rel string) (*agentv1.DeleteFileResponse, error) {
		resp, err := c.DeleteFile(t.Context(), connect.NewRequest(&agentv1.DeleteFileRequest{Pool: ref("p1", "/srv/isos"), RelPath: rel}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	for _, tt := range []struct {
		rel  string
		code connect.Code
	}{
		{"../other/x.iso", connect.CodeInvalidArgument},
		{"iso/../../other/x.iso", connect.CodeInvalidArgument},
		{"/srv/other/x.iso", connect.CodeInvalidArgument},
		{".quarry/pool.json", connect.CodeInvalidArgument},
		{"iso/a.iso\x00", connect.CodeInvalidArgument},
		{"", connect.CodeInvalidArgument},
		{"iso/escape/keep.iso", connect.CodeFailedPrecondition}, // os.Root will not follow the link out
	} {
		if _, err := del(tt.rel); connect.CodeOf(err) != tt.code {
			t.Errorf("DeleteFile(%q) = %v; want %v", tt.rel, err, tt.code)
		}
	}
	for _, keep := range []string{filepath.Join(outside, "keep.iso"), filepath.Join(root, "srv/other/x.iso"), filepath.Join(pool, ".quarry/pool.json")} {
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("%s: %v; it must survive", keep, err)
		}
	}

	if r, err := del("iso/a.iso"); err != nil || r.GetAlreadyGone() {
		t.Fatalf("DeleteFile(iso/a.iso) = %v, %v", r, err)
	}
	if _, err := os.Stat(filepath.Join(pool, "iso/a.iso")); !os.IsNotExist(err) {
		t.Errorf("iso/a.iso still there: %v", err)
	}
	if r, err := del("iso/a.iso"); err != nil || !r.GetAlreadyGone() {
		t.Errorf("deleting again = %v, %v; want already gone", r, err)
	}

	// A pool this node does not mount: nothing is deleted.
	_, err := c.DeleteFile(t.Context(), connect.NewRequest(&agentv1.DeleteFileRequest{Pool: ref("p2", "/srv/other"), RelPath: "iso/x.iso"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("DeleteFile in an unmounted pool = %v; want failed_precondition", err)
	}
}
