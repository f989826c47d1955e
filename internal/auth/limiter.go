package auth

import (
	"sync"
	"time"
)

// Limiter slows down guessing: it counts failed authentications per client
// in token buckets. A client may fail Burst times in a row and earns one
// more attempt every Window/Burst. While its bucket is empty, every
// authentication from it is refused, right or wrong, so a guess can never
// be confirmed. Successful authentications cost nothing.
type Limiter struct {
	burst  float64
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// maxClients bounds the limiter's memory; past it, clients whose buckets
// have refilled are forgotten first.
const maxClients = 16384

// NewLimiter allows burst failures per client, refilled at burst per
// window. now is the clock (time.Now when nil).
func NewLimiter(burst int, window time.Duration, now func() time.Time) *Limiter {
	if burst < 1 {
		burst = 1
	}
	if window <= 0 {
		window = time.Minute
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{burst: float64(burst), window: window, now: now, buckets: map[string]*bucket{}}
}

// Window is the time a client that used up its failures waits for all of
// them to come back.
func (l *Limiter) Window() time.Duration { return l.window }

// Allow reports whether client may try to authenticate now.
func (l *Limiter) Allow(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[client]
	return !ok || l.refill(b) >= 1
}

// Fail counts one failed authentication by client and reports whether
// that used up its attempts: from now on it is refused for a while.
func (l *Limiter) Fail(client string) (lockedOut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[client]
	if !ok {
		l.prune()
		b = &bucket{tokens: l.burst, at: l.now()}
		l.buckets[client] = b
	}
	if l.refill(b) >= 1 {
		b.tokens--
		return b.tokens < 1
	}
	return false
}

// refill brings b up to date and returns its tokens.
func (l *Limiter) refill(b *bucket) float64 {
	now := l.now()
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.burst/l.window.Seconds())
		b.at = now
	}
	return b.tokens
}

// prune makes room for more clients once the limiter is full: full
// buckets carry no memory, and if that is not enough, arbitrary ones go
// (a forgotten client gets a fresh bucket, which gives an attacker with
// that many addresses nothing new). It frees a quarter at once, so its
// cost is spread over many failures.
func (l *Limiter) prune() {
	if len(l.buckets) < maxClients {
		return
	}
	for k, b := range l.buckets {
		if l.refill(b) >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) <= maxClients*3/4 {
			break
		}
		delete(l.buckets, k)
	}
}
