package e2e

import (
	"encoding/json"
	"fmt"
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
)

// TestDownloadFromCatalog: a catalog entry (added by --catalog) whose
// checksum comes from a SHA256SUMS file; scenario 3: the pool has no
// assigned nodes, so any connected node that mounts it downloads.
func TestDownloadFromCatalog(t *testing.T) {
	o := origintest.New(t)
	f := o.Add("/images/noble-server-cloudimg-amd64.img", origintest.QCOW2(6*mib, 3<<30, 7))
	o.AddChecksumFile("/images/SHA256SUMS", map[string]string{
		"noble-server-cloudimg-amd64.img": f.SHA256(),
		"other.img":                       strings.Repeat("ab", 32),
	})
	catalogFile := filepath.Join(t.TempDir(), "catalog.json")
	entry := map[string]any{"entries": []map[string]any{{
		"id": "test-noble", "name": "Ubuntu 24.04 (local mirror)", "url": f.URL(), "checksumUrl": o.URL("/images/SHA256SUMS"),
		"format": "qcow2", "defaultUser": "ubuntu", "os": map[string]string{"distro": "ubuntu", "version": "24.04", "arch": "amd64"},
	}}}
	b, _ := json.Marshal(entry)
	if err := os.WriteFile(catalogFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, quarrytest.WithCatalog(catalogFile))
	cat, err := c.s.Images.ListCatalog(t.Context(), connect.NewRequest(&quarryv1.ListCatalogRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, e := range cat.Msg.GetEntries() {
		ids[e.GetId()] = true
	}
	for _, want := range []string{"test-noble", "ubuntu-24.04", "ubuntu-22.04", "debian-12", "debian-13", "rocky-9", "almalinux-9", "centos-stream-9", "centos-stream-10", "opensuse-leap-15.6"} {
		if !ids[want] {
			t.Errorf("catalog lacks %s", want)
		}
	}

	mkdir(t, c.agents["n2"].Opts.LocalPath("/srv/any"))
	pool := c.createPool(t, "any", "/srv/any", false)
	c.waitMounts(t, pool.GetId(), map[string]bool{"n2": true})
	resp, err := c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{CatalogId: "test-noble", StoragePoolId: pool.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, c.s, resp.Msg.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() != "n2" || j.GetSource() != "catalog:test-noble" {
		t.Fatalf("job %v; want SUCCEEDED on n2", j)
	}
	im := getImage(t, c.s, resp.Msg.GetImage().GetId())
	if im.GetName() != "test-noble.img" || im.GetDigest() != "sha256:"+f.SHA256() || im.GetOs().GetDistro() != "ubuntu" ||
		im.GetKind() != quarryv1.ImageKind_IMAGE_KIND_CLOUD_IMAGE {
		t.Errorf("image %v", im)
	}
	_, err = c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{CatalogId: "ubuntu-2404", StoragePoolId: pool.GetId()}))
	if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "did you mean ubuntu-24.04") {
		t.Errorf("unknown catalog id: %v", err)
	}
}

// TestDownloadNoSpace: a pool on a small filesystem: the clear no-space
// error, nothing partial left behind.
func TestDownloadNoSpace(t *testing.T) {
	c := newCluster(t)
	dir := c.agents["n1"].Opts.LocalPath("/srv/small")
	mkdir(t, dir)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs for the full-disk test (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	o := origintest.New(t)
	f := o.Add("/big.img", origintest.Random(16*mib, 8))
	pool := c.createPool(t, "small", "/srv/small", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	m := download(t, c.s, pool.GetId(), f.URL(), "")
	j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), "pool small on node n1 has") ||
		!strings.Contains(j.GetMessage(), "free") {
		t.Fatalf("job %v; want FAILED with the no-space message", j)
	}
	for _, sub := range []string{"images", ".quarry/partial"} {
		if left := entries(t, filepath.Join(dir, sub)); len(left) != 0 {
			t.Errorf("%s holds %v", sub, left)
		}
	}
}

// TestDownloadCancelAndLimits: with one download per node, a second waits
// QUEUED; cancelling the first removes its partial file and image, and the
// second runs.
func TestDownloadCancelAndLimits(t *testing.T) {
	c := newCluster(t, quarrytest.WithDownloadLimits(1, 8))
	o := origintest.New(t)
	slow := o.Add("/slow.img", origintest.Random(16*mib, 9))
	slow.RateLimit(2 * mib)
	next := o.Add("/next.img", origintest.Random(2*mib, 10))
	dir := c.agents["n1"].Opts.LocalPath("/srv/local")
	mkdir(t, dir)
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	first := download(t, c.s, pool.GetId(), slow.URL(), "")
	waitProgress(t, c.s, first.GetJob().GetId(), mib)
	second := download(t, c.s, pool.GetId(), next.URL(), "")
	resp, err := c.s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: second.GetJob().GetId()}))
	if err != nil || resp.Msg.GetJob().GetState() != quarryv1.JobState_JOB_STATE_QUEUED {
		t.Fatalf("second job %v, %v; want QUEUED behind the per-node limit", resp.Msg.GetJob(), err)
	}
	if _, err := c.s.Jobs.CancelJob(t.Context(), connect.NewRequest(&quarryv1.CancelJobRequest{Id: first.GetJob().GetId()})); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, c.s, first.GetJob().GetId(), 15*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("cancelled job %v", j)
	}
	// The image record goes right after the job ends (two writes).
	quarrytest.Eventually(t, 5*time.Second, func() error {
		if _, err := c.s.Images.GetImage(t.Context(), connect.NewRequest(&quarryv1.GetImageRequest{Id: first.GetImage().GetId()})); connect.CodeOf(err) != connect.CodeNotFound {
			return fmt.Errorf("the cancelled download's image is still there: %v", err)
		}
		return nil
	})
	if j := waitJob(t, c.s, second.GetJob().GetId(), 30*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("second job %v", j)
	}
	quarrytest.Eventually(t, 5*time.Second, func() error {
		if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
			return fmt.Errorf(".quarry/partial holds %v", left)
		}
		return nil
	})
	if _, err := c.s.Jobs.CancelJob(t.Context(), connect.NewRequest(&quarryv1.CancelJobRequest{Id: first.GetJob().GetId()})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("cancelling an ended job: %v; want failed_precondition", err)
	}
}

// TestDownloadCLI: `quarry image download --url … --wait` draws progress
// and ends with the image READY and its digest; `job ls` lists the job.
func TestDownloadCLI(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/cli.qcow2", origintest.QCOW2(4*mib, 1<<30, 11))
	f.RateLimit(4 * mib)
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})
	useToken(c.s.URL, c.s.AdminToken)

	r := quarry(t, c.s.URL, "image", "download", "--url", f.URL(), "--pool", "local", "--checksum", "sha256:"+f.SHA256(), "--wait")
	if r.code != 0 {
		t.Fatalf("image download: %+v", r)
	}
	if !strings.Contains(r.stdout, "READY") || !strings.Contains(r.stdout, "sha256:"+f.SHA256()) || !strings.Contains(r.stderr, "MiB") {
		t.Errorf("download output:\nstdout %s\nstderr %s", r.stdout, r.stderr)
	}
	// stderr is a pipe here: lines, not \r frames, and the phase once each.
	if strings.Contains(r.stderr, "\r") || strings.Count(r.stderr, "\n") > 20 {
		t.Errorf("progress without a terminal: %d lines, want one per phase or tenth:\n%q", strings.Count(r.stderr, "\n"), r.stderr)
	}
	for _, line := range strings.Split(r.stderr, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == f[1] {
			t.Errorf("progress line with the phase twice: %q", line)
		}
	}
	ls := mustQuarry(t, c.s.URL, "job", "ls")
	if !strings.Contains(ls, "SUCCEEDED") || !strings.Contains(ls, "n1") {
		t.Errorf("job ls:\n%s", ls)
	}
	cat := mustQuarry(t, c.s.URL, "catalog", "ls")
	if !strings.Contains(cat, "ubuntu-24.04") || !strings.Contains(cat, "debian-13") {
		t.Errorf("catalog ls:\n%s", cat)
	}
	bad := quarry(t, c.s.URL, "image", "download", "--url", "http://169.254.169.254/latest", "--pool", "local")
	if bad.code != 2 || !strings.Contains(bad.stderr, "link-local") {
		t.Errorf("metadata URL: %+v", bad)
	}
}
