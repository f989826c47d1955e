//go:build linux

package e2e

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// benchRig is what the download and upload benchmarks run against: an
// in-process control plane, a real agent process with its default
// checkpoint interval, and a pool "bench" on a real directory.
type benchRig struct {
	s    *quarrytest.Server
	pid  int    // the agent process, for its peak RSS
	pool string // the pool's id
	// imageID is the image a download made and the benchmark has not
	// deleted yet; the test's cleanup deletes it (on failure).
	imageID string
}

func startBenchRig(t *testing.T) *benchRig {
	t.Helper()
	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: "bench", CheckpointEvery: 2 * time.Second})
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	r := &benchRig{s: s, pid: agentPID(t, bin, a.Opts.DataDir())}
	mkdir(t, a.Opts.LocalPath("/srv/bench"))
	r.pool = createPool(t, s, "bench", "/srv/bench", a.NodeID)
	t.Cleanup(func() { // the pool's temp dir goes anyway; the record too
		if r.imageID != "" {
			s.Images.DeleteImage(context.Background(), connect.NewRequest(&quarryv1.DeleteImageRequest{Id: r.imageID}))
		}
	})
	return r
}

// download downloads url into the pool (DownloadImage) and polls GetJob
// every 20 ms until the job SUCCEEDED, which it returns; a job that ends
// otherwise, or is not done within, fails the test.
func (r *benchRig) download(t *testing.T, url, sum string, within time.Duration) *quarryv1.Job {
	t.Helper()
	start := time.Now()
	m := download(t, r.s, r.pool, url, "sha256:"+sum)
	if m.GetJob() == nil {
		t.Fatalf("DownloadImage = %v; want a new job (the previous image was deleted)", m)
	}
	r.imageID = m.GetImage().GetId()
	for {
		resp, err := r.s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: m.GetJob().GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		j := resp.Msg.GetJob()
		if st := j.GetState(); st == quarryv1.JobState_JOB_STATE_SUCCEEDED {
			return j
		} else if st == quarryv1.JobState_JOB_STATE_FAILED || st == quarryv1.JobState_JOB_STATE_CANCELLED {
			t.Fatalf("job %v", j)
		}
		if time.Since(start) > within {
			t.Fatalf("job not done after %v: %v (%s)", within, j.GetState(), progressOf(j))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkAndDelete checks that the image the last download made is READY
// with the digest sum and size bytes, then deletes it.
func (r *benchRig) checkAndDelete(t *testing.T, sum string, size uint64) {
	t.Helper()
	im := getImage(t, r.s, r.imageID)
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetDigest() != "sha256:"+sum || im.GetSizeBytes() != size {
		t.Fatalf("image %v; want READY, sha256:%s, %d bytes", im, sum, size)
	}
	if _, err := r.s.Images.DeleteImage(t.Context(), connect.NewRequest(&quarryv1.DeleteImageRequest{Id: r.imageID})); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	r.imageID = ""
}

// benchCommand is a reference command: a hung one must not hang the test,
// so it gets 2 minutes, in its own process group, all killed on timeout
// (sh's children too).
func benchCommand(t *testing.T, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// benchVariant is one thing a benchmark times: run is timed; after, when
// set, checks and cleans up what it did, untimed. A variant with no run is
// skipped (a reference that is missing).
type benchVariant struct {
	run, after func()
}

// interleave runs every variant once a round, for runs rounds, so that
// drift on the machine hits all of them alike; each run starts with no
// dirty pages (sync, untimed), so writeback left by the previous run does
// not slow the next. It returns the times of each variant, in order.
func interleave(runs int, vs ...benchVariant) [][]time.Duration {
	times := make([][]time.Duration, len(vs))
	for range runs {
		for i, v := range vs {
			if v.run == nil {
				continue
			}
			syscall.Sync()
			times[i] = append(times[i], timed(v.run))
			if v.after != nil {
				v.after()
			}
		}
	}
	return times
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}
