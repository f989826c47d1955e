package cli

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
)

// countingJobs answers GetJob and CancelJob and counts the calls that
// reached it.
type countingJobs struct {
	quarryv1connect.UnimplementedJobServiceHandler
	gets, cancels atomic.Int32
}

func (j *countingJobs) GetJob(_ context.Context, req *connect.Request[quarryv1.GetJobRequest]) (*connect.Response[quarryv1.GetJobResponse], error) {
	j.gets.Add(1)
	return connect.NewResponse(&quarryv1.GetJobResponse{Job: &quarryv1.Job{Id: req.Msg.GetId()}}), nil
}

func (j *countingJobs) CancelJob(context.Context, *connect.Request[quarryv1.CancelJobRequest]) (*connect.Response[quarryv1.CancelJobResponse], error) {
	j.cancels.Add(1)
	return connect.NewResponse(&quarryv1.CancelJobResponse{}), nil
}

// silentCut is a TCP proxy whose connections can be cut without the
// client being told, as a pulled cable or a NAT box forgetting them
// does: after cut(), a connection open then resets when the client next
// writes to it, and what it wrote never reaches the server. Connections
// made after cut() go through.
type silentCut struct {
	ln       net.Listener
	mu       sync.Mutex
	open     []*cutConn
	accepted atomic.Int32
}

type cutConn struct {
	client net.Conn
	dead   atomic.Bool
}

func newSilentCut(t *testing.T, target string) *silentCut {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentCut{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			cc := &cutConn{client: c}
			p.mu.Lock()
			p.open = append(p.open, cc)
			p.mu.Unlock()
			go func() {
				defer up.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if cc.dead.Load() {
						c.(*net.TCPConn).SetLinger(0) // a reset, as the far end's host answers
						c.Close()
						return
					}
					if n > 0 {
						if _, err := up.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go io.Copy(c, up)
		}
	}()
	return p
}

func (p *silentCut) url() string { return "http://" + p.ln.Addr().String() }

func (p *silentCut) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.open {
		c.dead.Store(true)
	}
	p.open = nil
}

// TestReadsRetriedAfterSilentCut: a Get call on a kept-alive connection
// that a network cut broke is sent again on a new connection and
// succeeds; a call that changes something is not sent twice, and says
// the control plane was not reached.
func TestReadsRetriedAfterSilentCut(t *testing.T) {
	jobs := &countingJobs{}
	mux := http.NewServeMux()
	mux.Handle(quarryv1connect.NewJobServiceHandler(jobs))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	proxy := newSilentCut(t, srv.Listener.Addr().String())
	t.Setenv("QUARRY_TOKEN", "qtok_test")
	g := &globals{server: proxy.url(), output: "table"}
	c, err := g.clients()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	get := func() error {
		_, err := c.jobs.GetJob(ctx, connect.NewRequest(&quarryv1.GetJobRequest{Id: "job-1"}))
		return err
	}

	if err := get(); err != nil {
		t.Fatal(err)
	}
	proxy.cut()
	if err := get(); err != nil {
		t.Fatalf("a read after a silent cut: %v", err)
	}
	if n := jobs.gets.Load(); n != 2 {
		t.Errorf("the server answered %d GetJob calls; want 2", n)
	}
	if n := proxy.accepted.Load(); n != 2 {
		t.Errorf("%d connections; want 2 (the one cut, then a new one)", n)
	}

	proxy.cut()
	_, err = c.jobs.CancelJob(ctx, connect.NewRequest(&quarryv1.CancelJobRequest{Id: "job-1"}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "the change may have been made") {
		t.Fatalf("a change after a silent cut: %v; want unavailable, saying the change may have been made", err)
	}
	if n := jobs.cancels.Load(); n != 0 {
		t.Errorf("the server saw %d CancelJob calls; want 0", n)
	}
	if n := proxy.accepted.Load(); n != 2 {
		t.Errorf("%d connections; want still 2 (a change is not sent again)", n)
	}
}
