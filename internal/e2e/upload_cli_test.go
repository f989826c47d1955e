package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// uploadCLI is `quarry image upload` with its own cache directory (where
// it remembers upload URLs), not yet started.
func uploadCLI(t *testing.T, s *quarrytest.Server, cache string, args ...string) (*exec.Cmd, *lockedBuffer, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(quarrytest.Binary(t), append([]string{"--server", s.URL, "image", "upload"}, args...)...)
	cmd.Env = append(os.Environ(), "QUARRY_SERVER=", "QUARRY_TOKEN="+s.AdminToken, "TMPDIR="+t.TempDir(), "XDG_CACHE_HOME="+cache, "HOME="+cache)
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUploadCLI: the CLI uploads a file, computing its sha256 while
// sending; Ctrl-C in the middle and the same command again resumes from
// the node's durable offset and ends with the right file, verified.
func TestUploadCLI(t *testing.T) {
	c := newCluster(t)
	localPool(t, c)
	cache := t.TempDir()
	dir := t.TempDir()

	small := writeFile(t, dir, "small.iso", isoBytes(t, "Debian 12.7.0 amd64 n", 2*mib))
	cmd, out, errw := uploadCLI(t, c.s, cache, small, "--pool", "local")
	if err := cmd.Run(); err != nil {
		t.Fatalf("quarry image upload: %v\n%s%s", err, out, errw)
	}
	if !strings.Contains(out.String(), "image small.iso is READY in pool local") || !strings.Contains(out.String(), "verified") {
		t.Errorf("output:\n%s\nstderr:\n%s", out, errw)
	}

	data := randomData(256*mib, 11)
	big := writeFile(t, dir, "big.raw", data)
	partial := filepath.Join(c.agents["n1"].Opts.LocalPath("/srv/local"), ".quarry/partial")
	cmd, out, errw = uploadCLI(t, c.s, cache, big, "--pool", "local", "--name", "big.raw")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once the node holds a checkpoint's worth.
	quarrytest.Eventually(t, 30*time.Second, func() error {
		ents, _ := os.ReadDir(partial)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && !strings.Contains(e.Name(), ".") && fi.Size() > 0 {
				if ck, err := os.ReadFile(filepath.Join(partial, e.Name()+".ckpt")); err == nil && !bytes.Contains(ck, []byte(`"offset":0,`)) {
					return nil
				}
			}
		}
		return fmt.Errorf("no checkpoint past 0 in %s yet", partial)
	})
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("interrupted upload: %v\n%s%s", err, out, errw)
	}
	if !strings.Contains(errw.String(), "run the same command again to resume") {
		t.Errorf("interrupted upload says:\n%s", errw)
	}
	cmd, out, errw = uploadCLI(t, c.s, cache, big, "--pool", "local", "--name", "big.raw")
	if err := cmd.Run(); err != nil {
		t.Fatalf("resumed upload: %v\n%s%s", err, out, errw)
	}
	if !strings.Contains(errw.String(), "resuming the upload of big.raw at") || !strings.Contains(out.String(), "READY") {
		t.Errorf("resumed upload:\nstdout:\n%s\nstderr:\n%s", out, errw)
	}
	got, err := os.ReadFile(filepath.Join(c.agents["n1"].Opts.LocalPath("/srv/local"), "images/big.raw"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the uploaded file differs from the original (%v)", err)
	}
	if !strings.Contains(out.String(), "sha256:"+sha256Hex(data)) {
		t.Errorf("output does not name the file's digest:\n%s", out)
	}
	var n int
	for _, j := range listJobs(t, c.s) {
		if j.GetKind() == "upload" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d upload jobs; want 2 (the interrupted one resumed, not started again)", n)
	}
}

func listJobs(t *testing.T, s *quarrytest.Server) []*quarryv1.Job {
	t.Helper()
	resp, err := s.Jobs.ListJobs(t.Context(), connect.NewRequest(&quarryv1.ListJobsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetJobs()
}

// TestUploadCurl: the README's two curl commands upload a file.
func TestUploadCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	c := newCluster(t)
	localPool(t, c)
	data := randomData(3*mib, 51)
	file := writeFile(t, t.TempDir(), "my.iso", data)
	out, err := exec.Command(curl, "-sS", "-i", "-X", "POST", c.s.URL+"/uploads/", "-H", "Authorization: Bearer "+c.s.AdminToken,
		"-H", "Tus-Resumable: 1.0.0", "-H", fmt.Sprintf("Upload-Length: %d", len(data)),
		"-H", "Upload-Metadata: filename "+b64("my.iso")+",pool "+b64("local")).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("201 Created")) {
		t.Fatalf("curl POST: %v\n%s", err, out)
	}
	var loc string
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Location: "); ok {
			loc = strings.TrimSpace(v)
		}
	}
	out, err = exec.Command(curl, "-sS", "-f", "-X", "PATCH", c.s.URL+loc, "-H", "Authorization: Bearer "+c.s.AdminToken,
		"-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0", "-H", "Content-Type: application/offset+octet-stream",
		"-T", file).CombinedOutput()
	if err != nil {
		t.Fatalf("curl PATCH: %v\n%s", err, out)
	}
	if j := getJob(t, c.s, jobOfUpload(loc)); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
