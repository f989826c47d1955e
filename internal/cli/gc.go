package cli

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
)

// serverGCPercent is the control plane's GOGC unless its environment sets
// one. Most of its live heap lasts (a connection to every node, about
// 35 KiB each), and Go's default of 100 lets the heap grow to twice that
// before collecting: 606–623 MiB at its peak with 5,000 nodes on SQLite,
// 460–485 MiB at 50, for about a quarter fewer pages served when the API
// saturates the CPU (README, Scale).
const serverGCPercent = 50

// setServerGC sets the collector's target for a control plane, unless
// GOGC in the environment says otherwise; it returns the GOGC it set, or
// the environment's.
func setServerGC() string {
	if gogc := os.Getenv("GOGC"); gogc != "" {
		return gogc
	}
	debug.SetGCPercent(serverGCPercent)
	return strconv.Itoa(serverGCPercent)
}

// serverMinProcs is the fewest Ps (GOMAXPROCS) a control plane runs with
// unless its environment sets GOMAXPROCS. With one P per core on a small
// machine, an API request often waited for the only P left: during the
// collector's mark phases (100–300 ms every one to two seconds, its worker
// on a quarter of the Ps' time) and while SQLite's file I/O held a P in a
// system call until the runtime handed it on. With 5,000 nodes on 2 cores
// (README, Scale), interleaved runs of one page of ListImages a second per
// client had a p99 of 17–47 ms with 3 Ps against 35–120 ms with 2. More Ps
// took yet more of the cores from the simulated agents beside it, whose
// answers then came later: with 4, the oldest check of a node passed 10 s
// in four runs of five (with 3, in one of five).
const serverMinProcs = 3

// setServerProcs raises GOMAXPROCS to serverMinProcs for a control plane,
// unless GOMAXPROCS in the environment says otherwise; it returns the
// GOMAXPROCS in effect.
func setServerProcs() int {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < serverMinProcs {
		runtime.GOMAXPROCS(serverMinProcs)
	}
	return runtime.GOMAXPROCS(0)
}
