package cli

import (
	"os"
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
