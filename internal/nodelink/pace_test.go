package nodelink

import (
	"testing"
	"time"
)

// TestChecksStartPaced: checks due at once start at twice the rate an
// interval's checks need, after a burst of a few; a check due later than
// its turn starts when due; a turn given back is another check's.
func TestChecksStartPaced(t *testing.T) {
	var s starter
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.resize(now, 1000, 8, 5*time.Second) // 400 starts a second
	var waits []time.Duration
	for range 100 {
		w, _ := s.turn(now, now.Add(-time.Second))
		waits = append(waits, w)
	}
	for i, w := range waits[:8] {
		if w != 0 {
			t.Fatalf("check %d of the burst waits %v", i, w)
		}
	}
	if got, want := waits[99], 92*(time.Second/400); got != want {
		t.Fatalf("the 100th check due at once waits %v, want %v (92 turns after the burst at 400/s)", got, want)
	}
	for i := 9; i < len(waits); i++ {
		if d := waits[i] - waits[i-1]; d != time.Second/400 {
			t.Fatalf("checks %d and %d start %v apart, want %v", i-1, i, d, time.Second/400)
		}
	}

	// Due a second from now, after every turn taken: it starts when due.
	if w, _ := s.turn(now, now.Add(time.Second)); w != time.Second {
		t.Fatalf("a check due in 1s waits %v", w)
	}
	// A turn given back goes to the next check.
	first, r := s.turn(now, now)
	r.CancelAt(now)
	if again, _ := s.turn(now, now); again != first {
		t.Fatalf("after a turn given back the next check waits %v, want %v", again, first)
	}
}
