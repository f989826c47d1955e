package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// slowReader yields data at about rate bytes a second.
type slowReader struct {
	data  []byte
	off   int
	rate  int
	start time.Time
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.start.IsZero() {
		r.start = time.Now()
	}
	if r.off == len(r.data) {
		return 0, io.EOF
	}
	p = p[:min(len(p), 64<<10, len(r.data)-r.off)]
	if ahead := time.Duration(float64(r.off+len(p))/float64(r.rate)*float64(time.Second)) - time.Since(r.start); ahead > 0 {
		time.Sleep(ahead)
	}
	n := copy(p, r.data[r.off:])
	r.off += n
	return n, nil
}

// slowPatch sends data at off at rate in the background; the channel
// gets the status (0 when the request failed).
func (c *tusClient) slowPatch(url string, off int64, data []byte, rate int) <-chan int {
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("PATCH", c.base+url, &slowReader{data: data, rate: rate})
		req.ContentLength = int64(len(data))
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Authorization", "Bearer "+c.token)
		req.Header.Set("Upload-Offset", strconv.FormatInt(off, 10))
		req.Header.Set("Content-Type", "application/offset+octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	return done
}

// waitUploaded waits until the upload's job has at least n bytes.
func waitUploaded(t *testing.T, s *quarrytest.Server, job string, n int64) {
	t.Helper()
	quarrytest.Eventually(t, 30*time.Second, func() error {
		if j := getJob(t, s, job); j.GetProgress().GetBytesDone() < uint64(n) {
			return fmt.Errorf("%d of %d bytes (job %v: %s)", j.GetProgress().GetBytesDone(), n, j.GetState(), j.GetMessage())
		}
		return nil
	})
}

// resumeUpload asks the offset until HEAD answers 200 and sends the rest.
func (c *tusClient) resumeUpload(url string, data []byte) int64 {
	c.t.Helper()
	var off int64
	quarrytest.Eventually(c.t, 30*time.Second, func() error {
		resp := c.do("HEAD", url, nil, nil)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HEAD: %s: %s", resp.Status, bodyOf(resp))
		}
		off, _ = strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
		return nil
	})
	if resp := c.patch(url, off, data[off:]); resp.StatusCode != http.StatusNoContent {
		c.t.Fatalf("resuming at %d: %s: %s", off, resp.Status, bodyOf(resp))
	}
	return off
}

// TestUploadSurvivesAgentKill: the agent is SIGKILLed in the middle of a
// write. While it is down, HEAD answers a retryable 503 that says why; once
// it is back the offset is its last checkpoint, and the upload ends with
// the right file.
func TestUploadSurvivesAgentKill(t *testing.T) {
	s, a := agentProcessWithPool(t)
	tc := newTus(t, s, s.AdminToken)
	data := randomData(48*mib, 21)
	var url string
	quarrytest.Eventually(t, 10*time.Second, func() error {
		resp := tc.do("POST", "/uploads/", nil, map[string]string{"Upload-Length": strconv.Itoa(len(data)),
			"Upload-Metadata": metadata("filename", "k.raw", "pool", "local", "checksum", "sha256:"+sha256Hex(data))})
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("%s: %s", resp.Status, bodyOf(resp))
		}
		url = resp.Header.Get("Location")
		return nil
	})
	done := tc.slowPatch(url, 0, data, 16*mib)
	waitUploaded(t, s, jobOfUpload(url), 20*mib)
	a.Kill()
	if st := <-done; st == http.StatusNoContent {
		t.Fatal("the write succeeded although its agent was killed")
	}
	if resp := tc.do("HEAD", url, nil, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("HEAD with the node down: %s", resp.Status)
	}
	if resp := tc.patch(url, 0, nil); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(bodyOf(resp), "try again once it is back") {
		t.Errorf("PATCH with the node down: %s: %s", resp.Status, bodyOf(resp))
	}
	a.Start()
	off := tc.resumeUpload(url, data)
	t.Logf("resumed at %d after the kill", off)
	if off == 0 || off > 48*mib {
		t.Errorf("resumed at %d", off)
	}
	j := getJob(t, s, jobOfUpload(url))
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}
	got, _ := os.ReadFile(filepath.Join(a.Opts.LocalPath("/srv/local"), "images/k.raw"))
	if !bytes.Equal(got, data) {
		t.Fatal("the uploaded file differs from the original")
	}
}

// TestUploadSurvivesHungAgent: the agent hangs (SIGSTOP: its connections
// stay open, it reads and answers nothing) in the middle of a write. The
// write ends within the health interval plus the check timeout (1 s + 3 s
// here) instead of waiting for the agent forever, and once the agent is
// woken up the upload resumes from its durable offset and ends with the
// right file.
func TestUploadSurvivesHungAgent(t *testing.T) {
	s, a := agentProcessWithPool(t, quarrytest.WithHealthInterval(time.Second))
	tc := newTus(t, s, s.AdminToken)
	data := randomData(48*mib, 23)
	url := tc.create(len(data), metadata("filename", "h.raw", "pool", "local", "checksum", "sha256:"+sha256Hex(data)))
	done := tc.slowPatch(url, 0, data, 16*mib)
	waitUploaded(t, s, jobOfUpload(url), 16*mib)
	a.Freeze()
	frozen := time.Now()
	select {
	case st := <-done:
		if st == http.StatusNoContent {
			t.Fatal("the write succeeded although its agent hung")
		}
		t.Logf("the write ended %v after the agent hung (status %d)", time.Since(frozen).Round(time.Millisecond), st)
	case <-time.After(15 * time.Second):
		a.Thaw()
		t.Fatal("the write to a hung agent did not end within 15 s")
	}
	a.Thaw()
	off := tc.resumeUpload(url, data)
	t.Logf("resumed at %d", off)
	if j := getJob(t, s, jobOfUpload(url)); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}
	got, _ := os.ReadFile(filepath.Join(a.Opts.LocalPath("/srv/local"), "images/h.raw"))
	if !bytes.Equal(got, data) {
		t.Fatal("the uploaded file differs from the original")
	}
}

// TestUploadSurvivesControlPlaneRestart: the control plane stops in the
// middle of a write; the next one, on the same data directory, knows the
// upload and the node's offset, and the upload ends.
func TestUploadSurvivesControlPlaneRestart(t *testing.T) {
	c := newCluster(t)
	localPool(t, c)
	tc := newTus(t, c.s, c.s.AdminToken)
	data := randomData(32*mib, 22)
	url := tc.create(len(data), metadata("filename", "r.raw", "pool", "local"))
	done := tc.slowPatch(url, 0, data, 16*mib)
	waitUploaded(t, c.s, jobOfUpload(url), 8*mib)
	c.s.Stop()
	<-done
	s := quarrytest.StartServer(t, quarrytest.WithDataDir(c.s.DataDir))
	tc = newTus(t, s, s.AdminToken)
	off := tc.resumeUpload(url, data)
	t.Logf("resumed at %d after the restart", off)
	if j := getJob(t, s, jobOfUpload(url)); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}
	got, _ := os.ReadFile(filepath.Join(c.agents["n1"].Opts.LocalPath("/srv/local"), "images/r.raw"))
	if !bytes.Equal(got, data) {
		t.Fatal("the uploaded file differs from the original")
	}
}

// TestUploadFailover: the node holding an upload into a shared pool is
// lost; the upload goes on through the other node that mounts the pool,
// from the same partial file.
func TestUploadFailover(t *testing.T) {
	c := newCluster(t)
	p := c.createPool(t, "shared", "/srv/nfs/isos", true, "n1", "n2")
	c.waitMounts(t, p.GetId(), map[string]bool{"n1": true, "n2": true})
	tc := newTus(t, c.s, c.s.AdminToken)
	data := randomData(8*mib, 23)
	url := tc.create(len(data), metadata("filename", "f.raw", "pool", "shared", "checksum", "sha256:"+sha256Hex(data)))
	if resp := tc.patch(url, 0, data[:3*mib]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first PATCH: %s: %s", resp.Status, bodyOf(resp))
	}
	owner := getJob(t, c.s, jobOfUpload(url)).GetNodeName()
	c.agents[owner].Stop()
	if off := tc.resumeUpload(url, data); off != 3*mib {
		t.Errorf("resumed at %d, want %d", off, 3*mib)
	}
	j := getJob(t, c.s, jobOfUpload(url))
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() == owner {
		t.Fatalf("job %v; want SUCCEEDED on the other node", j)
	}
	if h := strings.Join(historyOf(j), "\n"); !strings.Contains(h, "node "+owner+" was lost; moved to node") {
		t.Errorf("history:\n%s", h)
	}
	got, _ := os.ReadFile(filepath.Join(c.shared, "isos/images/f.raw"))
	if !bytes.Equal(got, data) {
		t.Fatal("the uploaded file differs from the original")
	}
}

// TestUploadPoolFull: a pool on an 8 MiB tmpfs takes a 5 MiB upload; a
// second one that does not fit is refused when it is created, with the
// free space and what it needs, and nothing is left in .quarry/partial.
func TestUploadPoolFull(t *testing.T) {
	c := newCluster(t)
	dir := c.agents["n1"].Opts.LocalPath("/srv/small")
	mkdir(t, dir)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount an 8 MiB tmpfs (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	p := c.createPool(t, "small", "/srv/small", false, "n1")
	c.waitMounts(t, p.GetId(), map[string]bool{"n1": true})
	tc := newTus(t, c.s, c.s.AdminToken)
	data := randomData(5*mib, 41)
	url := tc.create(len(data), metadata("filename", "a.raw", "pool", "small"))
	if resp := tc.patch(url, 0, data); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: %s: %s", resp.Status, bodyOf(resp))
	}
	resp := tc.do("POST", "/uploads/", nil, map[string]string{"Upload-Length": strconv.Itoa(5 * mib), "Upload-Metadata": metadata("filename", "b.raw", "pool", "small")})
	msg := bodyOf(resp)
	if (resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusInsufficientStorage) || !strings.Contains(msg, "free") {
		t.Fatalf("an upload that does not fit: %s: %s", resp.Status, msg)
	}
	t.Logf("refused: %s: %s", resp.Status, msg)
	ims, err := c.s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: p.GetId()}))
	if err != nil || len(ims.Msg.GetImages()) != 1 {
		t.Errorf("images in the pool: %v (%v); want only the first upload's", ims.Msg.GetImages(), err)
	}
	if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}
}

// serverProcess is `quarry server` running as a process of its own, so
// that a test can SIGKILL it.
type serverProcess struct {
	cmd    *exec.Cmd
	output *lockedBuffer
	done   chan struct{}
}

// startServerProcess runs `quarry server` on listen with its data in
// dataDir and returns once /readyz answers.
func startServerProcess(t *testing.T, dataDir, listen string) *serverProcess {
	t.Helper()
	cmd := exec.Command(quarrytest.Binary(t), "server", "--listen", listen, "--data-dir", dataDir,
		"--health-interval", quarrytest.HealthInterval.String())
	p := &serverProcess{cmd: cmd, output: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	quarrytest.Eventually(t, 20*time.Second, func() error {
		select {
		case <-p.done:
			t.Fatalf("quarry server exited: %v\n%s", cmd.ProcessState, p.output)
		default:
		}
		resp, err := http.Get("http://" + listen + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *serverProcess) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// TestUploadSurvivesControlPlaneKill: `quarry server` is SIGKILLed in the
// middle of a PATCH while a separate agent process writes it. A new
// process on the same data directory answers HEAD with what the agent made
// durable, the client sends the rest, and the image is READY with its
// checksum verified and the file whole.
//
// The node is enrolled and the pool created through an in-process control
// plane on the same data directory and address, which stops before the
// first process starts: from the upload's creation on, only processes run.
func TestUploadSurvivesControlPlaneKill(t *testing.T) {
	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: "n1"})
	mkdir(t, a.Opts.LocalPath("/srv/local"))
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	pool := createPool(t, s, "local", "/srv/local", a.NodeID)
	s.Stop()
	listen := strings.TrimPrefix(s.URL, "http://")
	// s's clients (admin token, same URL) now talk to the process.
	cp := startServerProcess(t, s.DataDir, listen)

	tc := newTus(t, s, s.AdminToken)
	data := randomData(48*mib, 24)
	var url string
	quarrytest.Eventually(t, 10*time.Second, func() error { // until the process sees the node
		resp := tc.do("POST", "/uploads/", nil, map[string]string{"Upload-Length": strconv.Itoa(len(data)),
			"Upload-Metadata": metadata("filename", "kill.raw", "pool", "local", "checksum", "sha256:"+sha256Hex(data))})
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("%s: %s", resp.Status, bodyOf(resp))
		}
		url = resp.Header.Get("Location")
		return nil
	})
	done := tc.slowPatch(url, 0, data, 16*mib)
	waitUploaded(t, s, jobOfUpload(url), 16*mib)
	cp.kill()
	if st := <-done; st == http.StatusNoContent {
		t.Fatal("the write succeeded although the control plane was killed")
	}
	t.Logf("control plane killed mid-PATCH:\n%s", lastLines(cp.output.String(), 3))

	startServerProcess(t, s.DataDir, listen)
	off := tc.resumeUpload(url, data)
	t.Logf("resumed at %d of %d after the kill", off, len(data))
	if off == 0 {
		t.Errorf("resumed at 0: the agent's checkpoints were lost")
	}
	if j := getJob(t, s, jobOfUpload(url)); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}
	ims, err := s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: pool}))
	if err != nil || len(ims.Msg.GetImages()) != 1 {
		t.Fatalf("images: %v (%v)", ims.Msg.GetImages(), err)
	}
	im := ims.Msg.GetImages()[0]
	if im.GetName() != "kill.raw" || im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || !im.GetVerified() ||
		im.GetDigest() != "sha256:"+sha256Hex(data) {
		t.Errorf("image %v; want kill.raw READY, verified, sha256:%s", im, sha256Hex(data))
	}
	got, _ := os.ReadFile(filepath.Join(a.Opts.LocalPath("/srv/local"), "images/kill.raw"))
	if !bytes.Equal(got, data) {
		t.Fatal("the uploaded file differs from the original")
	}
	if left := entries(t, filepath.Join(a.Opts.LocalPath("/srv/local"), ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}
}

// agentProcessWithPool starts a control plane with opts, an agent process
// n1 and its local pool "local" at /srv/local.
func agentProcessWithPool(t *testing.T, opts ...quarrytest.ServerOption) (*quarrytest.Server, *quarrytest.AgentProcess) {
	t.Helper()
	s := quarrytest.StartServer(t, opts...)
	a := quarrytest.StartAgentProcess(t, quarrytest.Binary(t), s, quarrytest.AgentOptions{Name: "n1"})
	mkdir(t, a.Opts.LocalPath("/srv/local"))
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	if _, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "local", Path: "/srv/local", AssignedNodeIds: []string{a.NodeID}})); err != nil {
		t.Fatal(err)
	}
	return s, a
}
