package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// always is how many requests a fault that should not run out lasts.
const always = 1 << 30

func getJob(t *testing.T, s *quarrytest.Server, id string) *quarryv1.Job {
	t.Helper()
	resp, err := s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetJob()
}

// attemptTimes returns when each "attempt N failed" entry of the job's
// history was written, in order.
func attemptTimes(j *quarryv1.Job) []time.Time {
	var ts []time.Time
	for _, e := range j.GetHistory() {
		if strings.HasPrefix(e.GetMessage(), "attempt ") && strings.Contains(e.GetMessage(), " failed on node ") {
			ts = append(ts, e.GetTime().AsTime())
		}
	}
	return ts
}

// waitAttempts polls until the job has n failed attempts in its history.
func waitAttempts(t *testing.T, s *quarrytest.Server, id string, n int, d time.Duration) *quarryv1.Job {
	t.Helper()
	var j *quarryv1.Job
	quarrytest.Eventually(t, d, func() error {
		j = getJob(t, s, id)
		if got := len(attemptTimes(j)); got < n || int(j.GetAttempts()) < n {
			return fmt.Errorf("job %s: %d failed attempts in its history, attempts=%d, %v: %s", id, got, j.GetAttempts(), j.GetState(), j.GetMessage())
		}
		return nil
	})
	return j
}

// TestDownloadRetriesThenFails: an origin that always answers 503. Every
// failed attempt reaches the job (attempts, one history entry each naming
// the 503), the gaps between them grow (default backoff), and after the
// budget the job fails with the origin's status and what to do; nothing
// is left in the pool.
func TestDownloadRetriesThenFails(t *testing.T) {
	c := newCluster(t, quarrytest.WithDownloadRetries(4, 0))
	o := origintest.New(t)
	f := o.Add("/flaky.img", origintest.Random(mib, 11))
	f.Status(http.StatusServiceUnavailable, always, 0)
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	start := time.Now()
	m := download(t, c.s, pool.GetId(), f.URL(), "")
	// Default flags: two attempts well within 60 s.
	waitAttempts(t, c.s, m.GetJob().GetId(), 2, 60*time.Second)
	t.Logf("2 failed attempts after %v", time.Since(start).Round(time.Millisecond))
	j := waitJob(t, c.s, m.GetJob().GetId(), 60*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_FAILED {
		t.Fatalf("job %v; want FAILED after the budget", j)
	}
	if j.GetAttempts() != 4 || !strings.Contains(j.GetMessage(), "503") || !strings.Contains(j.GetMessage(), "gave up after 4 failed attempts") {
		t.Errorf("attempts %d, message %q; want 4 and the origin's 503", j.GetAttempts(), j.GetMessage())
	}
	ts := attemptTimes(j)
	if len(ts) != 4 {
		t.Fatalf("history has %d attempt entries, want 4: %v", len(ts), j.GetHistory())
	}
	var gaps []time.Duration
	for i := 1; i < len(ts); i++ {
		gaps = append(gaps, ts[i].Sub(ts[i-1]))
	}
	t.Logf("gaps between failed attempts: %v", gaps)
	for i := 1; i < len(gaps); i++ {
		if gaps[i] <= gaps[i-1] {
			t.Errorf("gap %d (%v) is not longer than gap %d (%v)", i+1, gaps[i], i, gaps[i-1])
		}
	}
	for _, e := range j.GetHistory() {
		if strings.Contains(e.GetMessage(), " failed on node ") && !strings.Contains(e.GetMessage(), "503 Service Unavailable") {
			t.Errorf("history entry %q does not name the origin's status", e.GetMessage())
		}
	}
	if im := getImage(t, c.s, m.GetImage().GetId()); im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR {
		t.Errorf("image %v; want ERROR", im)
	}
	if left := entries(t, c.agents["n1"].Opts.LocalPath("/srv/local/.quarry/partial")); len(left) != 0 {
		t.Errorf("left in the pool after the failure: %v", left)
	}
}

// TestDownload404FailsAtOnce: a 404 is terminal: FAILED within 10 s,
// naming the 404 and what to do, without retries.
func TestDownload404FailsAtOnce(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	m := download(t, c.s, pool.GetId(), o.URL("/no/such.img"), "")
	j := waitJob(t, c.s, m.GetJob().GetId(), 10*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), "404") || !strings.Contains(j.GetMessage(), "check the URL") {
		t.Fatalf("job %v: %q; want FAILED naming the 404", j.GetState(), j.GetMessage())
	}
	if j.GetAttempts() != 0 {
		t.Errorf("attempts %d; a 404 is not retried", j.GetAttempts())
	}
}

// TestDownloadBackoffSurvivesRestarts: attempts and the next try's time
// are durable: after the control plane and the agent restart during a
// backoff, the count goes on where it was and the next attempt waits for
// the time set before the restart.
func TestDownloadBackoffSurvivesRestarts(t *testing.T) {
	c := newCluster(t, quarrytest.WithDownloadRetries(10, time.Second))
	o := origintest.New(t)
	f := o.Add("/later.img", origintest.Random(2*mib, 12))
	f.Status(http.StatusServiceUnavailable, always, 0)
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	m := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	id := m.GetJob().GetId()
	waitAttempts(t, c.s, id, 3, 30*time.Second) // the next waits about 4 s
	// The backoff is set once the agent has given the attempt up.
	var stored store.Job
	quarrytest.Eventually(t, 10*time.Second, func() error {
		var err error
		if stored, err = c.s.Store.GetJob(t.Context(), id); err != nil {
			return err
		}
		if stored.Attempts != 3 || stored.FailuresInRow != 3 || stored.NextAttemptAt.IsZero() {
			return fmt.Errorf("stored job: attempts %d, in a row %d, next attempt %v; want 3, 3 and a time", stored.Attempts, stored.FailuresInRow, stored.NextAttemptAt)
		}
		return nil
	})
	c.s.Stop()
	c.agents["n1"].Restart()
	s := quarrytest.StartServer(t, quarrytest.WithDataDir(c.s.DataDir), quarrytest.WithDownloadRetries(10, time.Second))
	j := waitAttempts(t, s, id, 4, 30*time.Second)
	ts := attemptTimes(j)
	if j.GetAttempts() != 4 || len(ts) != 4 {
		t.Fatalf("after the restarts: attempts %d, history %v; want the count to go on at 4", j.GetAttempts(), j.GetHistory())
	}
	if ts[3].Before(stored.NextAttemptAt) {
		t.Errorf("attempt 4 failed at %v, before the next try set before the restart (%v)", ts[3], stored.NextAttemptAt)
	}
	// The origin recovers: the job finishes, verified.
	f.Clear()
	if j := waitJob(t, s, id, 60*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v: %s; want SUCCEEDED once the origin is back", j.GetState(), j.GetMessage())
	}
}

// TestDownloadChecksumURL: a URL download verified against a checksum file
// given with it; a checksum and a checksum file together are refused, and
// so is a checksum file the URL policy refuses.
func TestDownloadChecksumURL(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/rel/disk.img", origintest.Random(2*mib, 61))
	o.AddChecksumFile("/rel/SHA256SUMS", map[string]string{"disk.img": f.SHA256()})
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	pool := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, pool.GetId(), map[string]bool{"n1": true})

	for _, bad := range []*quarryv1.DownloadImageRequest{
		{Url: f.URL(), StoragePoolId: pool.GetId(), Checksum: "sha256:" + f.SHA256(), ChecksumUrl: o.URL("/rel/SHA256SUMS")},
		{Url: f.URL(), StoragePoolId: pool.GetId(), ChecksumUrl: "http://169.254.169.254/SHA256SUMS"},
	} {
		if _, err := c.s.Images.DownloadImage(t.Context(), connect.NewRequest(bad)); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("checksum %q with checksum URL %q: %v; want invalid_argument", bad.GetChecksum(), bad.GetChecksumUrl(), err)
		}
	}
	resp, err := c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{
		Url: f.URL(), StoragePoolId: pool.GetId(), ChecksumUrl: o.URL("/rel/SHA256SUMS")}))
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, c.s, resp.Msg.GetJob().GetId(), 30*time.Second)
	im := getImage(t, c.s, resp.Msg.GetImage().GetId())
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || !im.GetVerified() || im.GetDigest() != "sha256:"+f.SHA256() {
		t.Fatalf("job %v (%s), image verified=%v %s; want SUCCEEDED and verified against the checksum file", j.GetState(), j.GetMessage(), im.GetVerified(), im.GetDigest())
	}
}
