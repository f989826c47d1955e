//go:build linux

package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// TestBenchmarkUpload measures an upload of a 2 GiB file and prints the
// figures with a reference taken in the same run. It runs only with
// QUARRY_BENCH=1 (make bench-upload): it writes 2 GiB at a time.
//
//   - quarry: `quarry image upload FILE --pool bench` (the CLI process,
//     sha256 computed while sending) through an in-process control plane
//     to a real agent process (default checkpoint interval) into a pool on
//     the same disk as the reference; the image must be READY and
//     verified. Each run deletes the image after.
//   - reference: `curl -T FILE` to a plain Go file sink on the same disk
//     that writes the body to a file and fsyncs it before answering.
//     Target: quarry ≤ 1.3 × curl.
//   - peak RSS: the agent process's VmHWM, and how much the control
//     plane's (this test process, reset before each upload through
//     /proc/self/clear_refs) grew during an upload (target ≤ 32 MiB).
//   - resume: the CLI is interrupted (SIGINT) at about half and run again;
//     the bytes sent twice (sent before the interrupt minus the offset it
//     resumed at) are printed (target ≤ 8 MiB + one checkpoint interval).
//
// Each variant runs three times, interleaved; the best counts.
func TestBenchmarkUpload(t *testing.T) {
	if os.Getenv("QUARRY_BENCH") == "" {
		t.Skip("set QUARRY_BENCH=1 to run (make bench-upload)")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed: it is the reference this benchmark compares with")
	}
	const (
		size = 2 << 30
		runs = 3
	)
	r := startBenchRig(t)
	s, pool, pid := r.s, r.pool, r.pid

	// The file: random 1 MiB blocks in a random order, written once.
	src := filepath.Join(t.TempDir(), "bench.raw")
	writeBenchFile(t, src, size)

	sinkDir := t.TempDir()
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Create(filepath.Join(sinkDir, "sink.raw"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, r.Body); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if err := f.Sync(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer sink.Close()

	cache := t.TempDir()
	var tq, tc []time.Duration
	var cpGrowth int64
	var cpuCLI, cpuCP, cpuAgent time.Duration // of the fastest quarry run
	var runCPU, refCPU []string               // of every run
	for i := range runs {
		ccmd := exec.Command(curl, "-sS", "-f", "-T", src, sink.URL+"/sink.raw")
		sink0 := selfCPU()
		d := timed(func() {
			out, err := ccmd.CombinedOutput()
			if err != nil {
				t.Fatalf("curl -T: %v\n%s", err, out)
			}
		})
		refCPU = append(refCPU, fmt.Sprintf("%v: curl %v, sink %v", d.Round(10*time.Millisecond),
			(ccmd.ProcessState.UserTime()+ccmd.ProcessState.SystemTime()).Round(10*time.Millisecond), (selfCPU()-sink0).Round(10*time.Millisecond)))
		tc = append(tc, d)
		os.Remove(filepath.Join(sinkDir, "sink.raw"))

		before := selfRSS(t)
		resetPeak(t)
		name := fmt.Sprintf("run%d.raw", i)
		cmd, stdout, stderr := uploadCLI(t, s, cache, src, "--pool", "bench", "--name", name)
		cp0, ag0 := selfCPU(), procCPU(t, pid)
		d = timed(func() {
			if err := cmd.Run(); err != nil {
				t.Fatalf("quarry image upload: %v\n%s%s", err, stdout, stderr)
			}
		})
		cli, cp, ag := cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime(), selfCPU()-cp0, procCPU(t, pid)-ag0
		runCPU = append(runCPU, fmt.Sprintf("%v: CLI %v, control plane %v, agent %v", d.Round(10*time.Millisecond),
			cli.Round(10*time.Millisecond), cp.Round(10*time.Millisecond), ag.Round(10*time.Millisecond)))
		if len(tq) == 0 || d < slices.Min(tq) {
			cpuCLI, cpuCP, cpuAgent = cli, cp, ag
		}
		tq = append(tq, d)
		cpGrowth = max(cpGrowth, vmHWM(t, os.Getpid())-before)
		deleteUploaded(t, s, pool, name)
	}

	// Interrupted at about half, then resumed.
	cmd, _, stderr := uploadCLI(t, s, cache, src, "--pool", "bench", "--name", "resume.raw")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	quarrytest.Eventually(t, 2*time.Minute, func() error {
		for _, j := range listJobs(t, s) {
			if j.GetKind() == "upload" && j.GetState() == quarryv1.JobState_JOB_STATE_RUNNING && j.GetProgress().GetBytesDone() >= size/2 {
				return nil
			}
		}
		return fmt.Errorf("not half way yet")
	})
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	sent := matchInt(t, `after sending .* \((\d+) bytes\)`, stderr.String())
	cmd, stdout, stderr2 := uploadCLI(t, s, cache, src, "--pool", "bench", "--name", "resume.raw")
	if err := cmd.Run(); err != nil {
		t.Fatalf("resumed upload: %v\n%s%s", err, stdout, stderr2)
	}
	resumedAt := matchInt(t, `\(byte (\d+)\)`, stderr2.String())

	best := func(ds []time.Duration) time.Duration { return slices.Min(ds) }
	bq, bc := best(tq), best(tc)
	fmt.Printf("upload of 2 GiB, best of %d (all runs: quarry %v, curl -T %v)\n", runs, rounded(tq), rounded(tc))
	fmt.Printf("  quarry image upload (sha256 while sending, through the control plane to the agent, verified): %v (%.0f MiB/s)\n",
		bq.Round(10*time.Millisecond), float64(size)/(1<<20)/bq.Seconds())
	fmt.Printf("  curl -T to a Go file sink with fsync:                                                        %v (%.0f MiB/s)\n",
		bc.Round(10*time.Millisecond), float64(size)/(1<<20)/bc.Seconds())
	fmt.Printf("  ratio quarry/curl %.2f (target <= 1.3)\n", float64(bq)/float64(bc))
	fmt.Printf("  CPU time of the fastest quarry run: CLI %v, control plane %v, agent %v (2 cores shared with other work)\n",
		cpuCLI.Round(10*time.Millisecond), cpuCP.Round(10*time.Millisecond), cpuAgent.Round(10*time.Millisecond))
	fmt.Printf("  CPU time of every quarry run: %s\n", strings.Join(runCPU, "; "))
	fmt.Printf("  CPU time of every reference run: %s\n", strings.Join(refCPU, "; "))
	fmt.Printf("control plane RSS growth during an upload %.1f MiB (target <= 32 MiB); agent peak RSS %.1f MiB\n",
		float64(cpGrowth)/(1<<20), float64(vmHWM(t, pid))/(1<<20))
	fmt.Printf("interrupted at %.1f MiB sent, resumed at %.1f MiB: %.1f MiB sent twice (target <= 8 MiB + one checkpoint interval)\n",
		float64(sent)/(1<<20), float64(resumedAt)/(1<<20), float64(sent-resumedAt)/(1<<20))
}

func writeBenchFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blocks := make([][]byte, 16)
	for i := range blocks {
		blocks[i] = randomData(1<<20, uint64(i+100))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for off := int64(0); off < size; off += 1 << 20 {
		b := slices.Clone(blocks[r.IntN(len(blocks))])
		b[0], b[1] = byte(off>>20), byte(off>>28) // no two blocks alike
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
}

func deleteUploaded(t *testing.T, s *quarrytest.Server, poolID, name string) {
	t.Helper()
	ims, err := s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: poolID}))
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range ims.Msg.GetImages() {
		if im.GetName() == name {
			if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || !im.GetVerified() {
				t.Fatalf("uploaded image %v; want READY and verified", im)
			}
			if _, err := s.Images.DeleteImage(t.Context(), connect.NewRequest(&quarryv1.DeleteImageRequest{Id: im.GetId()})); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no image %s after its upload", name)
}

// selfRSS is this process's resident set size now.
func selfRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var pages, rss int64
	fmt.Sscan(string(b), &pages, &rss)
	return rss * int64(os.Getpagesize())
}

// resetPeak resets this process's VmHWM to its current RSS.
func resetPeak(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Logf("cannot reset the peak RSS (%v): the growth printed is since the start", err)
	}
}

func matchInt(t *testing.T, re, s string) int64 {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %q in:\n%s", re, s)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// selfCPU is the CPU time this process (the in-process control plane) has
// used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time process pid has used (utime + stime, in clock
// ticks of 10 ms).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
