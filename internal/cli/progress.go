package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/cupwriter"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/quarry-project/quarry/internal/bytesize"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

// progressView shows the updates of a watched job.
type progressView interface {
	update(j *quarryv1.Job)
	// end finishes the display, leaving the cursor on a fresh line;
	// succeeded fills the bar.
	end(succeeded bool)
}

// newProgressView draws a bar redrawn in place when w is a terminal (mpb,
// fitted to the terminal's width); otherwise, for logs and pipes, it prints
// one line per phase change or per tenth of the bytes.
func newProgressView(w io.Writer) progressView {
	if f, ok := isTerminal(w); ok {
		return newBarView(mpb.WithOutput(f))
	}
	return &lineView{w: w, tenth: -1}
}

// isTerminal reports whether w is a terminal, which may be redrawn in
// place.
func isTerminal(w io.Writer) (*os.File, bool) {
	f, ok := w.(*os.File)
	return f, ok && cupwriter.New(f, false).IsTerminal()
}

// jobPhase is what the job is doing: its phase, else its state.
func jobPhase(j *quarryv1.Job) string {
	if p := j.GetProgress().GetPhase(); p != "" {
		return p
	}
	return strings.ToLower(enumWord(j.GetState()))
}

// progressDetail reads like "1.2 GiB / 2.3 GiB (52%) 110 MiB/s ETA 10s";
// empty before any byte is known.
func progressDetail(j *quarryv1.Job) string {
	p := j.GetProgress()
	if p.GetBytesDone() == 0 && p.GetBytesTotal() == 0 {
		return ""
	}
	s := bytesize.Format(p.GetBytesDone())
	if total := p.GetBytesTotal(); total > 0 {
		s += fmt.Sprintf(" / %s (%d%%)", bytesize.Format(total), p.GetBytesDone()*100/total)
	}
	if j.GetState() == quarryv1.JobState_JOB_STATE_RUNNING {
		if r := p.GetBytesPerSecond(); r > 0 {
			s += " " + bytesize.Format(uint64(r)) + "/s"
		}
		if eta := p.GetEtaSeconds(); eta > 0 {
			s += " ETA " + (time.Duration(eta) * time.Second).String()
		}
	}
	return s
}

// lineView prints a line when the phase changes or another tenth of the
// bytes is done: a 20 s download logs a dozen lines, not a frame per update.
type lineView struct {
	w     io.Writer
	phase string
	tenth int // of the bytes, at the last line; -1 while the size is unknown
}

func (v *lineView) update(j *quarryv1.Job) {
	phase, tenth := jobPhase(j), -1
	if p := j.GetProgress(); p.GetBytesTotal() > 0 {
		tenth = int(p.GetBytesDone() * 10 / p.GetBytesTotal())
	}
	if phase == v.phase && tenth <= v.tenth {
		return
	}
	v.phase, v.tenth = phase, tenth
	if d := progressDetail(j); d != "" {
		fmt.Fprintf(v.w, "%-11s %s\n", phase, d)
	} else {
		fmt.Fprintln(v.w, phase)
	}
}

func (v *lineView) end(bool) {}

// barView is a bar on a terminal: "downloading [=====>----] 1.2 GiB / …".
type barView struct {
	p   *mpb.Progress
	bar *mpb.Bar

	mu  sync.Mutex
	job *quarryv1.Job
}

func newBarView(opts ...mpb.ContainerOption) *barView {
	v := &barView{}
	v.p = mpb.New(opts...)
	// Created with total 0, the bar does not complete on its own when the
	// bytes are all there: verifying and finalizing follow.
	v.bar = v.p.New(0, mpb.BarStyle(),
		mpb.PrependDecorators(decor.Any(func(decor.Statistics) string { return v.words(jobPhase) }, decor.WC{W: 11, C: decor.DindentRight})),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return v.words(progressDetail) })),
	)
	return v
}

// words applies f to the latest job, under the lock: decorators run on
// mpb's goroutine.
func (v *barView) words(f func(*quarryv1.Job) string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.job == nil {
		return ""
	}
	return f(v.job)
}

func (v *barView) update(j *quarryv1.Job) {
	v.mu.Lock()
	v.job = j
	v.mu.Unlock()
	p := j.GetProgress()
	if p.GetBytesTotal() > 0 {
		v.bar.SetTotal(int64(p.GetBytesTotal()), false)
	}
	v.bar.SetCurrent(int64(p.GetBytesDone()))
}

func (v *barView) end(succeeded bool) {
	if succeeded {
		v.bar.SetTotal(-1, true)
	} else {
		v.bar.Abort(false) // keeps the last frame: where it stopped
	}
	v.p.Wait()
}
