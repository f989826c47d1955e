package simscale

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
)

// ListJob is one phase of the list load: the clients, what they ask and
// how often.
type ListJob struct {
	URL, Token string
	// SourceIP, when set, is the address the clients connect from: the
	// control plane limits the connections of one client address, which
	// the simulator's own requests share.
	SourceIP    string
	PoolIDs     []string
	ISOsPerPool int
	Clients     int
	// Pace is how often each client asks for a page; 0: as soon as it has
	// the last.
	Pace time.Duration
	For  time.Duration
}

// ListSamples is what the clients of a ListJob saw: the latency of every
// answered request (timed from when it was due), how late each was sent,
// and the failures.
type ListSamples struct {
	Lats, Lates []time.Duration
	// Dues are when each answered request was due, from the start.
	Dues    []time.Duration
	Errs    int
	LastErr string
	Elapsed time.Duration
	// CPU is the CPU time of the clients' process meanwhile (all of this
	// process's, when the clients run in the simulator's).
	CPU time.Duration
}

// RunListClients runs the clients of job and returns what they saw. Each
// client asks for a page of 100 images, the first of one pool's or of
// the whole library's, half and half, and checks that it is full.
func RunListClients(ctx context.Context, job ListJob) ListSamples {
	// The control plane refuses one client address more than 64
	// connections at once (it resets the 65th): requests past 60 at once
	// wait for one.
	tr := &http.Transport{MaxIdleConnsPerHost: 2 * job.Clients, MaxConnsPerHost: 60}
	if job.SourceIP != "" {
		tr.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(job.SourceIP)}}).DialContext
	}
	hc := &http.Client{Transport: &auth.Transport{Token: job.Token, Base: tr}}
	defer hc.CloseIdleConnections()
	images := quarryv1connect.NewImageServiceClient(hc, job.URL)
	var (
		mu  sync.Mutex
		out ListSamples
	)
	cpu0 := processCPU()
	start := time.Now()
	end := start.Add(job.For)
	var wg sync.WaitGroup
	for range job.Clients {
		wg.Go(func() {
			var mine, myLate, myDue []time.Duration
			// Paced clients start spread over one pace.
			due := start.Add(time.Duration(rand.Int64N(int64(max(job.Pace, 1)))))
			for due.Before(end) && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-time.After(time.Until(due)):
				}
				if job.Pace == 0 {
					due = time.Now()
				}
				req, want := job.request()
				late := time.Since(due)
				resp, err := images.ListImages(ctx, connect.NewRequest(req))
				d := time.Since(due)
				due = due.Add(job.Pace)
				if err == nil && len(resp.Msg.GetImages()) != want {
					err = fmt.Errorf("a page held %d images, want %d", len(resp.Msg.GetImages()), want)
				}
				if err != nil {
					mu.Lock()
					out.Errs++
					out.LastErr = err.Error()
					mu.Unlock()
					continue
				}
				mine = append(mine, d)
				myLate = append(myLate, late)
				myDue = append(myDue, due.Add(-job.Pace).Sub(start))
			}
			mu.Lock()
			out.Lats = append(out.Lats, mine...)
			out.Lates = append(out.Lates, myLate...)
			out.Dues = append(out.Dues, myDue...)
			mu.Unlock()
		})
	}
	wg.Wait()
	out.Elapsed = time.Since(start)
	out.CPU = processCPU() - cpu0
	return out
}

// processCPU is this process's CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// request is one client's request and how many images its page must hold.
func (job ListJob) request() (req *quarryv1.ListImagesRequest, want int) {
	const page = 100
	if rand.IntN(2) == 0 {
		return &quarryv1.ListImagesRequest{PageSize: page}, min(page, len(job.PoolIDs)*job.ISOsPerPool)
	}
	return &quarryv1.ListImagesRequest{StoragePoolId: job.PoolIDs[rand.IntN(len(job.PoolIDs))], PageSize: page}, min(page, job.ISOsPerPool)
}

// ServeListClients runs the ListJobs read from r, one JSON document each,
// and writes each one's ListSamples to w as it ends, until r ends: the
// clients' process of StartListClients.
func ServeListClients(ctx context.Context, r io.Reader, w io.Writer) error {
	dec, enc := json.NewDecoder(r), json.NewEncoder(w)
	for {
		var job ListJob
		if err := dec.Decode(&job); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading a list job: %w", err)
		}
		if err := enc.Encode(RunListClients(ctx, job)); err != nil {
			return err
		}
	}
}

// StartListClients starts the clients' process: this program run with
// args, which must call ServeListClients on its standard input and
// output. It returns the function that runs a ListJob there (for
// Config.ListClients) and the one that ends the process.
//
// The clients stand for machines of their own: in a process of their own,
// they do not wait behind the simulated agents' goroutines, and with
// Config.AgentsNice they are ahead of them for a core.
func StartListClients(ctx context.Context, self string, args ...string) (run func(context.Context, ListJob) (ListSamples, error), stop func() error, err error) {
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting the clients' process: %w", err)
	}
	out := json.NewDecoder(bufio.NewReader(outPipe))
	var mu sync.Mutex // one job at a time
	run = func(ctx context.Context, job ListJob) (ListSamples, error) {
		mu.Lock()
		defer mu.Unlock()
		var s ListSamples
		if err := json.NewEncoder(in).Encode(job); err != nil {
			return s, fmt.Errorf("sending the clients' process a job: %w", err)
		}
		if err := out.Decode(&s); err != nil {
			return s, fmt.Errorf("reading what the clients' process saw: %w", err)
		}
		return s, ctx.Err()
	}
	stop = func() error {
		in.Close()
		return cmd.Wait()
	}
	return run, stop, nil
}
