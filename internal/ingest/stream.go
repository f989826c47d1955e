package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// errStall is the cause with which the watchdog cancels an attempt.
var errStall = errors.New("stalled")

// stream reads the body into the sink's chunks, submitting each one as
// it fills.
func (d *download) stream(ctx, actx context.Context, body io.Reader) error {
	for {
		n, rerr := body.Read(d.limited(d.s.space()))
		if n > 0 {
			if err := d.throttle(actx, n); err != nil {
				return d.classify(ctx, actx, err)
			}
			d.arrived.Add(int64(n))
			d.fetched += int64(n)
			full := d.s.add(n)
			d.meter.update(d.offset(), d.total, false)
			if full {
				if err := d.submit(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return d.classify(ctx, actx, rerr)
		}
	}
}

// limited clips a read to what the limiter lets through at once.
func (d *download) limited(p []byte) []byte {
	if d.r.Limiter == nil {
		return p
	}
	return p[:min(len(p), d.r.Limiter.Burst())]
}

// throttle waits until the n bytes just read were allowed to arrive.
func (d *download) throttle(ctx context.Context, n int) error {
	if d.r.Limiter == nil {
		return nil
	}
	return d.r.Limiter.WaitN(ctx, n)
}

// watch cancels actx with errStall when fewer than 64 KiB arrive within
// StallTimeout, from the request until the body ends; the returned
// function stops it.
func (d *download) watch(actx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	return watchArrivals(actx, cancel, &d.arrived, d.r.StallTimeout)
}

// watchArrivals is watch for any counter of received bytes: each
// connection of a segmented download has its own.
func watchArrivals(actx context.Context, cancel context.CancelCauseFunc, arrived *atomic.Int64, stallTimeout time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(max(stallTimeout/8, 5*time.Millisecond))
		defer t.Stop()
		mark, since := arrived.Load(), time.Now()
		for {
			select {
			case <-done:
				return
			case <-actx.Done():
				return
			case now := <-t.C:
				if n := arrived.Load(); n-mark >= stallBytes {
					mark, since = n, now
				} else if now.Sub(since) >= stallTimeout {
					cancel(errStall)
					return
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// meter reports progress at most every reportEvery, with a smoothed rate.
type meter struct {
	fn       func(Progress)
	cur      string
	last     time.Time
	lastDone int64
	rate     float64
	conns    int // connections fetching now
}

const reportEvery = 250 * time.Millisecond

func newMeter(fn func(Progress)) *meter { return &meter{fn: fn} }

// rebase starts the rate over from done bytes: the bytes a resumed
// download restored from its checkpoint were not transferred now.
func (m *meter) rebase(done int64) {
	m.last, m.lastDone, m.rate = time.Now(), done, 0
}

// phase reports a phase change at once.
func (m *meter) phase(p string, done, total int64) {
	if m.cur == p {
		return
	}
	m.cur = p
	m.update(done, total, true)
}

func (m *meter) update(done, total int64, force bool) {
	if m.fn == nil {
		return
	}
	now := time.Now()
	dt := now.Sub(m.last)
	if !force && dt < reportEvery {
		return
	}
	switch {
	case done < m.lastDone || m.last.IsZero():
		m.rate = 0 // restarted: the old rate says nothing
	case dt > 0:
		r := float64(done-m.lastDone) / dt.Seconds()
		if m.rate == 0 {
			m.rate = r
		} else {
			m.rate = 0.7*m.rate + 0.3*r
		}
	}
	m.last, m.lastDone = now, done
	m.fn(Progress{Phase: m.cur, Done: done, Total: total, BytesPerSec: m.rate, Connections: m.conns})
}

// sameFile reports whether name is a regular file of the given size and
// SHA-256: the download that found it there can count as done.
func sameFile(root *os.Root, name string, size int64, sum string) (bool, error) {
	f, err := root.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() != size {
		return false, err
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, chunkSize)); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == sum, nil
}
