package cli

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"time"
)

// servePprof serves Go's profiles (/debug/pprof/), lock contention
// included, on the loopback address in QUARRY_PPROF_ADDR, when it is set,
// for measuring a running server or agent. Other addresses are refused:
// the profiles are not authenticated.
func servePprof(log *slog.Logger) error {
	addr := os.Getenv("QUARRY_PPROF_ADDR")
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return usageErrorf("QUARRY_PPROF_ADDR %q: give a loopback address and port, such as 127.0.0.1:6060", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// Contention too: which locks and waits hold work up (a sample of
	// one in 100 contended locks, and of waits of a millisecond or more).
	runtime.SetMutexProfileFraction(100)
	runtime.SetBlockProfileRate(int(time.Millisecond))
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("serving profiles", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	go http.Serve(ln, mux)
	return nil
}
