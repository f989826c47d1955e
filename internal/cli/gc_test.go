package cli

import (
	"runtime"
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

func TestSetServerProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(1)
	if got := setServerProcs(); got != serverMinProcs {
		t.Errorf("on one P without GOMAXPROCS: %d; want %d", got, serverMinProcs)
	}
	// More Ps than the least stay.
	runtime.GOMAXPROCS(serverMinProcs + 2)
	if got := setServerProcs(); got != serverMinProcs+2 {
		t.Errorf("on %d Ps: %d; want them kept", serverMinProcs+2, got)
	}

	// The operator's GOMAXPROCS stands (the runtime read it at start;
	// here it is set as the runtime would have).
	t.Setenv("GOMAXPROCS", "1")
	runtime.GOMAXPROCS(1)
	if got := setServerProcs(); got != 1 {
		t.Errorf("with GOMAXPROCS=1: %d; want 1", got)
	}
}
