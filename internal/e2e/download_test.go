package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

const mib = 1 << 20

// download asks for a URL download into a pool and returns the response.
func download(t *testing.T, s *quarrytest.Server, poolID, url, checksum string) *quarryv1.DownloadImageResponse {
	t.Helper()
	resp, err := s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{
		Url: url, StoragePoolId: poolID, Checksum: checksum}))
	if err != nil {
		t.Fatalf("DownloadImage: %v", err)
	}
	return resp.Msg
}

// waitJob polls until the job ends, within d, and returns it.
func waitJob(t *testing.T, s *quarrytest.Server, id string, d time.Duration) *quarryv1.Job {
	t.Helper()
	var j *quarryv1.Job
	quarrytest.Eventually(t, d, func() error {
		resp, err := s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: id}))
		if err != nil {
			return err
		}
		j = resp.Msg.GetJob()
		switch j.GetState() {
		case quarryv1.JobState_JOB_STATE_SUCCEEDED, quarryv1.JobState_JOB_STATE_FAILED, quarryv1.JobState_JOB_STATE_CANCELLED:
			return nil
		}
		return fmt.Errorf("job %s is %v (%s)", id, j.GetState(), progressOf(j))
	})
	return j
}

func progressOf(j *quarryv1.Job) string {
	p := j.GetProgress()
	return fmt.Sprintf("%s %d/%d", p.GetPhase(), p.GetBytesDone(), p.GetBytesTotal())
}

// waitProgress polls until the job has at least n bytes done.
func waitProgress(t *testing.T, s *quarrytest.Server, id string, n uint64) {
	t.Helper()
	quarrytest.Eventually(t, 30*time.Second, func() error {
		resp, err := s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: id}))
		if err != nil {
			return err
		}
		if got := resp.Msg.GetJob().GetProgress().GetBytesDone(); got < n {
			return fmt.Errorf("%d of %d bytes", got, n)
		}
		return nil
	})
}

func getImage(t *testing.T, s *quarrytest.Server, id string) *quarryv1.Image {
	t.Helper()
	resp, err := s.Images.GetImage(t.Context(), connect.NewRequest(&quarryv1.GetImageRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetImage()
}

// entries lists a directory, for "nothing left behind" checks.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

// TestDownloadVerified: scenario 1 — the assigned, connected node downloads;
// the image ends READY with its sha256 and format, in images/, with nothing
// left in .quarry/partial; asking again returns the same image.
func TestDownloadVerified(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/noble.qcow2", origintest.QCOW2(8*mib, 10<<30, 1))
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	m := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	if m.GetJob() == nil || m.GetImage().GetState() != quarryv1.ImageState_IMAGE_STATE_PENDING {
		t.Fatalf("DownloadImage = %v; want a PENDING image and its job", m)
	}
	again := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	if !again.GetExisting() || again.GetJob().GetId() != m.GetJob().GetId() {
		t.Errorf("asking again: %v; want the running job %s", again, m.GetJob().GetId())
	}
	j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() != "n1" {
		t.Fatalf("job %v; want SUCCEEDED on n1", j)
	}
	im := getImage(t, c.s, m.GetImage().GetId())
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetDigest() != "sha256:"+f.SHA256() ||
		im.GetFormat() != "qcow2" || im.GetSizeBytes() != 8*mib || im.GetPath() != "images/noble.qcow2" ||
		im.GetVirtualSizeBytes() != 10<<30 {
		t.Errorf("image %v", im)
	}
	dir := c.agents["n1"].Opts.LocalPath("/srv/local")
	if _, err := os.Stat(filepath.Join(dir, "images/noble.qcow2")); err != nil {
		t.Errorf("the file is not in images/: %v", err)
	}
	if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}
	same := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	if !same.GetExisting() || same.GetJob() != nil || same.GetImage().GetId() != im.GetId() {
		t.Errorf("asking for the same digest again: %v; want the READY image", same)
	}
}

// TestDownloadChecksumMismatch: wrong bytes → one fresh attempt → ERROR with
// expected and actual digests; nothing in images/ or .quarry/partial/.
func TestDownloadChecksumMismatch(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/bad.img", origintest.Random(4*mib, 2))
	want := f.SHA256()
	f.WrongBytes(mib)
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	m := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+want)
	j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), "sha256:"+want) ||
		!strings.Contains(j.GetMessage(), "checksum mismatch") {
		t.Fatalf("job %v; want FAILED naming the expected digest", j)
	}
	// The job says where it failed, and its history the class.
	if p := j.GetProgress().GetPhase(); p != "verifying" {
		t.Errorf("a job that failed its checksum shows phase %q; want verifying", p)
	}
	if h := strings.Join(historyOf(j), "\n"); !strings.Contains(h, "failed (checksum mismatch): ") {
		t.Errorf("history does not name the failure's class:\n%s", h)
	}
	im := getImage(t, c.s, m.GetImage().GetId())
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR || !strings.Contains(im.GetStateReason(), "checksum mismatch") {
		t.Errorf("image %v; want ERROR with the mismatch", im)
	}
	if f.Requests() < 2 {
		t.Errorf("%d requests; want one fresh attempt after the first mismatch", f.Requests())
	}
	dir := c.agents["n1"].Opts.LocalPath("/srv/local")
	for _, sub := range []string{"images", ".quarry/partial"} {
		if left := entries(t, filepath.Join(dir, sub)); len(left) != 0 {
			t.Errorf("%s holds %v", sub, left)
		}
	}
}

// TestDownloadNoNode is scenario 4: no node can reach the pool → the request
// fails at once with the clear error, and nothing is created.
func TestDownloadNoNode(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/x.img", origintest.Random(mib, 3))
	pool := c.createPool(t, "nowhere", "/srv/nowhere", false, "n3")
	_, err := c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{Url: f.URL(), StoragePoolId: pool.GetId()}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), `no node can reach pool "nowhere"`) {
		t.Fatalf("DownloadImage = %v; want failed_precondition with the reason", err)
	}
	jobs, err := c.s.Jobs.ListJobs(t.Context(), connect.NewRequest(&quarryv1.ListJobsRequest{}))
	if err != nil || len(jobs.Msg.GetJobs()) != 0 {
		t.Errorf("jobs after a refused download: %v, %v", jobs.Msg.GetJobs(), err)
	}
	for _, bad := range []struct{ url, frag string }{
		{"ftp://example.com/x.img", "only http and https"},
		{"http://169.254.169.254/latest/meta-data", "link-local"},
	} {
		_, err := c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{Url: bad.url, StoragePoolId: pool.GetId()}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), bad.frag) {
			t.Errorf("DownloadImage(%s) = %v; want invalid_argument mentioning %q", bad.url, err, bad.frag)
		}
	}
}

// TestDownloadFailsOver: a node lost mid-download on a shared pool: another
// node that mounts it resumes from the partial file, and the origin serves
// at most 5 % more than the image.
func TestDownloadFailsOver(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	const size = 32 * mib
	f := o.Add("/big.img", origintest.Random(size, 4))
	// What a lost node costs is what it fetched since its last checkpoint:
	// at 4 MiB/s and 200 ms checkpoints, under 3 % of this image.
	f.RateLimit(4 * mib)
	pool := c.createPool(t, "isos", "/srv/nfs/isos", true, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true, "n2": true})

	m := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	waitProgress(t, c.s, m.GetJob().GetId(), size/2)
	c.agents["n1"].Stop()
	j := waitJob(t, c.s, m.GetJob().GetId(), 60*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() != "n2" {
		t.Fatalf("job %v; want SUCCEEDED on n2", j)
	}
	served := f.BytesServed()
	t.Logf("origin served %d bytes for a %d-byte image (%.3f×)", served, size, float64(served)/size)
	if float64(served) > 1.05*size {
		t.Errorf("origin served %.3f× the image; want ≤ 1.05×", float64(served)/size)
	}
	if im := getImage(t, c.s, m.GetImage().GetId()); im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY {
		t.Errorf("image %v", im)
	}
}

// TestDownloadSurvivesAgentKill: the agent process is SIGKILLed at about
// half; restarted, it completes having re-fetched at most a few MiB.
func TestDownloadSurvivesAgentKill(t *testing.T) {
	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: "n1"})
	mkdir(t, a.Opts.LocalPath("/srv/local"))
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "local", Path: "/srv/local", AssignedNodeIds: []string{a.NodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	o := origintest.New(t)
	const size = 32 * mib
	f := o.Add("/big.img", origintest.Random(size, 5))
	f.RateLimit(8 * mib)

	m := download(t, s, resp.Msg.GetPool().GetId(), f.URL(), "sha256:"+f.SHA256())
	waitProgress(t, s, m.GetJob().GetId(), size/2)
	a.Kill()
	a.Start()
	j := waitJob(t, s, m.GetJob().GetId(), 60*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}
	refetched := f.BytesServed() - size
	t.Logf("re-fetched %d bytes after the kill", refetched)
	if refetched > 4*mib {
		t.Errorf("re-fetched %d bytes; want at most a few MiB", refetched)
	}
}

// TestDownloadReadoptedAfterControlPlaneRestart: the control plane stops
// mid-download; started again, it re-adopts the job, which finishes.
func TestDownloadReadoptedAfterControlPlaneRestart(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	const size = 24 * mib
	f := o.Add("/big.img", origintest.Random(size, 6))
	f.RateLimit(8 * mib)
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	m := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	waitProgress(t, c.s, m.GetJob().GetId(), size/3)
	c.s.Stop()
	s := quarrytest.StartServer(t, quarrytest.WithDataDir(c.s.DataDir))
	j := waitJob(t, s, m.GetJob().GetId(), 60*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}
	if float64(f.BytesServed()) > 1.05*size {
		t.Errorf("origin served %d bytes for %d", f.BytesServed(), size)
	}
	if h := strings.Join(historyOf(j), "\n"); !strings.Contains(h, "resumed on node n1 at ") {
		t.Errorf("history does not say where the job resumed:\n%s", h)
	}
	imgs, err := s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: pool.GetId()}))
	if err != nil || len(imgs.Msg.GetImages()) != 1 {
		t.Errorf("images after the restart: %v, %v; want exactly one", imgs.Msg.GetImages(), err)
	}
}

// TestWatchJobShowsProgress: WatchJob sends the job as its bytes come in,
// not only when its state changes.
func TestWatchJobShowsProgress(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/slow.raw", origintest.Random(8*mib, 12))
	f.RateLimit(2 * mib)
	pool := localPool(t, c)
	m := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	stream, err := c.s.Jobs.WatchJob(t.Context(), connect.NewRequest(&quarryv1.WatchJobRequest{Id: m.GetJob().GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	running := map[uint64]bool{} // distinct byte counts seen while RUNNING
	var last *quarryv1.Job
	for stream.Receive() {
		last = stream.Msg().GetJob()
		if last.GetState() == quarryv1.JobState_JOB_STATE_RUNNING && last.GetProgress().GetBytesDone() > 0 {
			running[last.GetProgress().GetBytesDone()] = true
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if last.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("the stream ended with %v", last)
	}
	if len(running) < 2 {
		t.Errorf("WatchJob sent %d distinct byte counts while the 4 s download ran; want its progress", len(running))
	}
}
