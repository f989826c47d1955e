package cli

import (
	"log/slog"
	"strings"
	"testing"
)

// TestPprofLoopbackOnly: profiles, which are not authenticated, are served
// on a loopback address only; anything else is refused with what to give.
func TestPprofLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "10.0.0.1:6060", "localhost", "127.0.0.1"} {
		t.Setenv("QUARRY_PPROF_ADDR", addr)
		if err := servePprof(slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("QUARRY_PPROF_ADDR=%s: %v; want a refusal naming loopback", addr, err)
		}
	}
	t.Setenv("QUARRY_PPROF_ADDR", "127.0.0.1:0")
	if err := servePprof(slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("QUARRY_PPROF_ADDR=127.0.0.1:0: %v", err)
	}
}
