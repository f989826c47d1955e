package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store/pgtest"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// TestPostgresControlPlane runs a control plane on PostgreSQL with an
// agent: a pool, a verified download to READY from a local origin; then the
// control plane restarts on the same database and still has the image and
// its job, and nothing went to SQLite.
func TestPostgresControlPlane(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s := quarrytest.StartServer(t, quarrytest.WithDatabaseURL(url))
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	c := &cluster{s: s, agents: map[string]*quarrytest.Agent{"n1": a}, ids: map[string]string{"n1": a.NodeID}}
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)

	o := origintest.New(t)
	f := o.Add("/noble.qcow2", origintest.QCOW2(4*mib, 10<<30, 7))
	mkdir(t, a.Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})
	m := download(t, s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	j := waitJob(t, s, m.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v; want SUCCEEDED", j)
	}
	im := getImage(t, s, m.GetImage().GetId())
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetDigest() != "sha256:"+f.SHA256() {
		t.Fatalf("image %v; want READY with the origin's digest", im)
	}

	s.Stop()
	s = quarrytest.StartServer(t, quarrytest.WithDataDir(s.DataDir), quarrytest.WithDatabaseURL(url))
	again := getImage(t, s, im.GetId())
	if again.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || again.GetDigest() != im.GetDigest() ||
		again.GetSizeBytes() != im.GetSizeBytes() || again.GetVirtualSizeBytes() != 10<<30 ||
		!again.GetCreatedAt().AsTime().Equal(im.GetCreatedAt().AsTime()) {
		t.Errorf("image after the restart:\n %v\nwant\n %v", again, im)
	}
	resp, err := s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: j.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Msg.GetJob(); got.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || got.GetImageId() != im.GetId() ||
		len(historyOf(got)) < len(historyOf(j)) {
		t.Errorf("job after the restart:\n %v\nwant\n %v", got, j)
	}
	imgs, err := s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: pool.GetId()}))
	if err != nil || len(imgs.Msg.GetImages()) != 1 {
		t.Errorf("images after the restart: %v, %v; want exactly one", imgs.Msg.GetImages(), err)
	}
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	if _, err := os.Stat(filepath.Join(s.DataDir, "quarry.db")); !os.IsNotExist(err) {
		t.Errorf("a control plane on PostgreSQL made quarry.db in its data directory (%v)", err)
	}
}

// TestPostgresServerBinary starts `quarry server --dev` with the database
// in QUARRY_DATABASE_URL: its node is in PostgreSQL. A URL of another kind
// is refused without echoing its password.
func TestPostgresServerBinary(t *testing.T) {
	url := pgtest.NewDatabase(t)
	dir := t.TempDir()
	t.Setenv("QUARRY_DATABASE_URL", url)
	d := startDev(t, dir)
	devReady(t, d)
	st, err := sqlstore.OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n, err := st.GetNodeByName(context.Background(), "dev"); err != nil || n.State != "READY" {
		t.Errorf("node dev in PostgreSQL: %+v, %v; want it READY", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "quarry.db")); !os.IsNotExist(err) {
		t.Errorf("quarry server --dev on PostgreSQL made quarry.db (%v)", err)
	}
	d.stop(t)

	out := refused(t, "server", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", "mysql://quarry:s3cret@db/quarry")
	if !strings.Contains(out, `"mysql" URLs are not supported`) || strings.Contains(out, "s3cret") {
		t.Errorf("quarry server --database-url mysql://… said:\n%s\nwant a refusal naming the scheme, without the password", out)
	}
}

// TestMigrateStore moves a dev-mode installation from SQLite to PostgreSQL
// with quarry migrate-store: started again on PostgreSQL with the same data
// directory it has its node, pool and admin token; a second copy into the
// now non-empty database is refused.
func TestMigrateStore(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir)
	poolID := devReady(t, d)
	d.stop(t)

	url := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, quarrytest.Binary(t), "migrate-store",
		"--from", "sqlite:"+filepath.Join(dir, "quarry.db"), "--to", url).CombinedOutput()
	if err != nil {
		t.Fatalf("quarry migrate-store: %v\n%s", err, out)
	}
	for _, want := range []string{"nodes            1 rows", "pools            1 rows", "copied; every table"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("quarry migrate-store said:\n%s\nwant %q", out, want)
		}
	}

	t.Setenv("QUARRY_DATABASE_URL", url)
	d = startDev(t, dir)
	if got := devReady(t, d); got != poolID {
		t.Errorf("pool local on PostgreSQL is %s, want the copied %s", got, poolID)
	}
	d.stop(t)

	out2 := refused(t, "migrate-store", "--from", "sqlite:"+filepath.Join(dir, "quarry.db"), "--to", url)
	if !strings.Contains(out2, "not empty") {
		t.Errorf("a second migrate-store said:\n%s\nwant a refusal of the non-empty target", out2)
	}
}
