package nodelink

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	l := New(Config{Interval: time.Second, MaxBackoff: 5 * time.Second})
	tests := []struct {
		failures int
		base     time.Duration
	}{
		{0, time.Second},
		{1, time.Second},
		{2, 2 * time.Second},
		{3, 4 * time.Second},
		{4, 5 * time.Second},
		{40, 5 * time.Second},
	}
	for _, tt := range tests {
		for range 50 {
			d := l.delay(tt.failures)
			lo, hi := tt.base*9/10, tt.base*11/10
			if d < lo || d > hi {
				t.Fatalf("delay(%d) = %v; want %v ±10%%", tt.failures, d, tt.base)
			}
		}
	}
}
