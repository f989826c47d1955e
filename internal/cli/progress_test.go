package cli

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/vbauerster/mpb/v8"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

const mib = 1 << 20

func job(state quarryv1.JobState, phase string, done, total uint64) *quarryv1.Job {
	return &quarryv1.Job{Id: "j1", State: state, Progress: &quarryv1.JobProgress{
		Phase: phase, BytesDone: done, BytesTotal: total, BytesPerSecond: 10 * mib, EtaSeconds: 3,
	}}
}

// updates is a download as WatchJob reports it: many updates per tenth.
func updates() []*quarryv1.Job {
	run := quarryv1.JobState_JOB_STATE_RUNNING
	js := []*quarryv1.Job{
		job(quarryv1.JobState_JOB_STATE_QUEUED, "", 0, 0),
		job(run, "preflight", 0, 0),
		job(run, "preflight", 0, 0),
	}
	for done := uint64(0); done <= 100*mib; done += mib {
		js = append(js, job(run, "downloading", done, 100*mib))
	}
	return append(js, job(run, "verifying", 100*mib, 100*mib), job(run, "finalizing", 100*mib, 100*mib),
		job(quarryv1.JobState_JOB_STATE_SUCCEEDED, "", 100*mib, 100*mib))
}

// Without a terminal: one line per phase change or tenth, no \r frames,
// and the phase once per line.
func TestLineView(t *testing.T) {
	var b bytes.Buffer
	v := newProgressView(&b)
	for _, j := range updates() {
		v.update(j)
	}
	v.end(true)
	out := b.String()
	if strings.Contains(out, "\r") {
		t.Fatalf("output has carriage returns:\n%q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	// queued, preflight, downloading 0%…100% (11), verifying, finalizing, succeeded
	if len(lines) != 16 {
		t.Errorf("%d lines, want 16:\n%s", len(lines), out)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 1 && f[0] == f[1] {
			t.Errorf("phase printed twice: %q", l)
		}
	}
	if !strings.Contains(out, "\ndownloading 50.0 MiB / 100.0 MiB (50%) 10.0 MiB/s ETA 3s\n") {
		t.Errorf("no line at 50%%:\n%s", out)
	}
}

// fakeTerminal is a terminal of a given width for mpb.
type fakeTerminal struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	width int
}

func (f *fakeTerminal) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.Write(p)
}

func (f *fakeTerminal) ReadFrom(r io.Reader) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.ReadFrom(r)
}
func (f *fakeTerminal) IsTerminal() bool               { return true }
func (f *fakeTerminal) GetTermSize() (int, int, error) { return f.width, 24, nil }
func (f *fakeTerminal) Flush(int) error                { return nil }
func (f *fakeTerminal) String() string                 { f.mu.Lock(); defer f.mu.Unlock(); return f.buf.String() }

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]")

// On a terminal: a bar that fits the width, with the phase shown once.
func TestBarViewFitsTheTerminal(t *testing.T) {
	for _, width := range []int{50, 100} {
		term := &fakeTerminal{width: width}
		v := newBarView(mpb.WithConsoleWriter(term))
		for _, j := range updates() {
			v.update(j)
		}
		v.end(true)
		frames := strings.Split(strings.TrimSpace(ansi.ReplaceAllString(term.String(), "")), "\n")
		last := frames[len(frames)-1]
		t.Logf("width %d, last frame: %q", width, last)
		for _, l := range frames {
			if w := utf8.RuneCountInString(l); w > width {
				t.Errorf("width %d: a frame of %d columns: %q", width, w, l)
			}
			if strings.Count(l, "downloading") > 1 || strings.Count(l, "preflight") > 1 {
				t.Errorf("phase twice: %q", l)
			}
		}
		if !strings.Contains(last, "100.0 MiB / 100.0 MiB (100%)") {
			t.Errorf("width %d: last frame %q", width, last)
		}
	}
}
