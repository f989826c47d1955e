package httpguard

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// BodyRate is the least a client must keep up while it sends a request
// body: within Idle of the start, and then at MinRate bytes a second on
// average, and never silent for longer than Idle. A client that falls
// behind has its connection's reads time out, which ends the request and
// the connection, so a slow sender ties up nothing for long.
type BodyRate struct {
	Idle    time.Duration
	MinRate float64 // bytes per second; 0 checks only Idle
}

// Wrap returns next with the bodies of its requests held to b.
func (b BodyRate) Wrap(next http.Handler) http.Handler {
	if b.Idle <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			// On a copy: the server looks at its own request's body after
			// the handler, to tell whether the connection can be reused.
			r = r.WithContext(r.Context())
			r.Body = &rateBody{ReadCloser: r.Body, rate: b, rc: http.NewResponseController(w), start: time.Now()}
		}
		next.ServeHTTP(w, r)
	})
}

type rateBody struct {
	io.ReadCloser
	rate  BodyRate
	rc    *http.ResponseController
	start time.Time
	n     int64
	done  bool // the body ended: the deadline is lifted
}

func (b *rateBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	deadline := time.Now().Add(b.rate.Idle)
	if b.rate.MinRate > 0 {
		earned := time.Duration(float64(b.n) / b.rate.MinRate * float64(time.Second))
		if d := b.start.Add(b.rate.Idle + earned); d.Before(deadline) {
			deadline = d
		}
	}
	// ErrNotSupported (a writer that is not the server's) leaves the
	// body as it was; nothing else can fail.
	_ = b.rc.SetReadDeadline(deadline)
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF:
		// After the body the connection waits for the next request (or
		// watches for the client going away) under the server's own
		// timeouts, not this body's.
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The deadline stays: what is left of the body is never read, and
		// the server closes the connection after its answer.
		return n, fmt.Errorf("the request body came too slowly (%d bytes in %v; at least %.0f bytes a second, and no pause over %v): %w",
			b.n, time.Since(b.start).Round(time.Millisecond), b.rate.MinRate, b.rate.Idle, err)
	}
	return n, err
}
