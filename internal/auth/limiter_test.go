package auth

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestLimiter(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	l := NewLimiter(10, time.Minute, clock.Now)
	const ip = "192.0.2.1"

	for i := range 10 {
		if !l.Allow(ip) {
			t.Fatalf("attempt %d refused; 10 failures are allowed", i+1)
		}
		if locked := l.Fail(ip); locked != (i == 9) {
			t.Errorf("failure %d reports lockout %v", i+1, locked)
		}
	}
	if l.Allow(ip) {
		t.Fatal("allowed after 10 failures in a row")
	}
	if l.Fail(ip) {
		t.Error("a failure while locked out reports a new lockout")
	}
	if !l.Allow("192.0.2.2") {
		t.Error("another client is refused")
	}
	clock.Advance(5 * time.Second)
	if l.Allow(ip) {
		t.Error("allowed 5 s later; one attempt comes back every 6 s")
	}
	clock.Advance(time.Second)
	if !l.Allow(ip) {
		t.Error("refused 6 s later; one attempt should have come back")
	}
	l.Fail(ip)
	if l.Allow(ip) {
		t.Error("allowed right after failing the attempt that came back")
	}
	clock.Advance(time.Hour)
	for i := range 10 {
		if !l.Allow(ip) {
			t.Fatalf("after an hour, attempt %d refused; the bucket holds no more than 10", i+1)
		}
		l.Fail(ip)
	}
	if l.Allow(ip) {
		t.Error("an hour of quiet earned more than 10 failures")
	}
}

func TestLimiterBoundsMemory(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	l := NewLimiter(3, time.Minute, clock.Now)
	for i := range 2 * maxClients {
		l.Fail(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	if n := len(l.buckets); n > maxClients {
		t.Errorf("the limiter remembers %d clients, more than %d", n, maxClients)
	}
}
