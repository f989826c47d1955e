package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// TestServerShutdown: SIGTERM while downloads run, a scan is asked for and
// job watch streams are open: the process exits within 5 s, the store is
// closed last, and nothing is logged after "control plane stopped".
func TestServerShutdown(t *testing.T) {
	d := startDev(t, t.TempDir(), "--allow-loopback-urls")
	poolID := devReady(t, d)
	token, _ := cliTokens.Load(d.URL)
	hc := quarrytest.HTTPClient(token.(string))
	images := quarryv1connect.NewImageServiceClient(hc, d.URL)
	jobs := quarryv1connect.NewJobServiceClient(hc, d.URL)

	o := origintest.New(t)
	var jobIDs []string
	for i, name := range []string{"/a.img", "/b.img"} {
		f := o.Add(name, origintest.Random(64*mib, uint64(40+i)))
		f.RateLimit(mib) // still running when the signal comes
		resp, err := images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{Url: f.URL(), StoragePoolId: poolID}))
		if err != nil {
			t.Fatal(err)
		}
		jobIDs = append(jobIDs, resp.Msg.GetJob().GetId())
	}
	quarrytest.Eventually(t, 30*time.Second, func() error {
		for _, id := range jobIDs {
			resp, err := jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: id}))
			if err != nil {
				return err
			}
			if resp.Msg.GetJob().GetProgress().GetBytesDone() == 0 {
				return fmt.Errorf("job %s has no bytes yet", id)
			}
		}
		return nil
	})
	// Watch streams held open by clients, as `quarry job watch` does.
	streamsEnded := make(chan error, len(jobIDs))
	for _, id := range jobIDs {
		s, err := jobs.WatchJob(context.Background(), connect.NewRequest(&quarryv1.WatchJobRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		if !s.Receive() {
			t.Fatalf("watch of %s: %v", id, s.Err())
		}
		go func() {
			for s.Receive() {
			}
			streamsEnded <- s.Err()
			s.Close()
		}()
	}
	scan := make(chan error, 1)
	go func() {
		_, err := images.ScanISOs(context.Background(), connect.NewRequest(&quarryv1.ScanISOsRequest{}))
		scan <- err
	}()

	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM\n%s", d.stderr)
	}
	took := time.Since(start)
	t.Logf("exited %v after SIGTERM with two downloads, two watch streams and a scan", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("took %v to exit after SIGTERM; want at most 5 s", took)
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0\n%s", code, d.stderr)
	}
	for range jobIDs {
		<-streamsEnded // ended by the shutdown, not left hanging
	}
	<-scan
	logs := strings.TrimSpace(d.stderr.String())
	lines := strings.Split(logs, "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, `msg="control plane stopped"`) {
		t.Errorf("the last log line is %q; want \"control plane stopped\" last (store closed last, nothing after)\n%s", last, logs)
	}
	if _, err := http.Get(d.URL + "/healthz"); err == nil {
		t.Errorf("the server still answers after it exited")
	}
	if testing.Verbose() {
		t.Logf("the log from SIGTERM on:\n%s", logs[strings.LastIndex(logs, "shutting down")-200:])
	}
}
