package cli

import (
	"runtime/debug"
	"testing"
)

func TestSetServerGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	t.Setenv("GOGC", "")
	debug.SetGCPercent(100)
	if got := setServerGC(); got != "50" {
		t.Errorf("without GOGC: %s; want 50", got)
	}
	if was := debug.SetGCPercent(100); was != serverGCPercent {
		t.Errorf("without GOGC the collector's target is %d; want %d", was, serverGCPercent)
	}

	// The operator's GOGC stands (the runtime read it at start; here it
	// is set as the runtime would have).
	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200)
	if got := setServerGC(); got != "200" {
		t.Errorf("with GOGC=200: %s; want 200", got)
	}
	if was := debug.SetGCPercent(100); was != 200 {
		t.Errorf("with GOGC=200 the collector's target is %d; want it left at 200", was)
	}
}
