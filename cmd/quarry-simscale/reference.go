package main

import (
	"compress/flate"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"
)

// machineReference times a fixed piece of CPU work (compressing 24 MiB of
// generated text) run on every core at once, the median of five, while
// nothing of the benchmark runs. On a shared host the same work takes
// longer when its neighbours are busy: runs whose references differ were
// not made on the same machine, in effect, and their latencies compare
// only as far as the references do.
func machineReference() time.Duration {
	data := referenceData()
	took := make([]time.Duration, 5)
	for i := range took {
		start := time.Now()
		var wg sync.WaitGroup
		for range runtime.NumCPU() {
			wg.Go(func() {
				w, _ := flate.NewWriter(io.Discard, flate.BestSpeed)
				w.Write(data) //nolint:errcheck // io.Discard
				w.Close()     //nolint:errcheck
			})
		}
		wg.Wait()
		took[i] = time.Since(start)
	}
	slices.Sort(took)
	return took[len(took)/2]
}

// referenceData is the reference's text, made once for every run.
var referenceData = sync.OnceValue(func() []byte { return referenceText(24 << 20) })

// referenceText is n bytes of words drawn from a fixed seed: the same text
// in every run.
func referenceText(n int) []byte {
	words := []string{"quarry ", "image ", "pool ", "node ", "verify ", "resume ", "ready ", "scan ", "agent ", "library "}
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		if r.IntN(8) == 0 {
			b = append(b, byte('0'+r.IntN(10)), '\n')
		}
	}
	return b[:n]
}
