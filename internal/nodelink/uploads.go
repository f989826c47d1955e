package nodelink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/uploadwire"
)

// OpenUpload opens (or finds open) an upload on a node and returns its
// durable offset.
func (l *Link) OpenUpload(ctx context.Context, nodeID string, ref *agentv1.UploadRef) (int64, error) {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return 0, err
	}
	resp, err := c.OpenUpload(ctx, connect.NewRequest(&agentv1.OpenUploadRequest{Upload: ref}))
	if err != nil {
		return 0, agentError(err)
	}
	return resp.Msg.GetOffset(), nil
}

// UploadWrite is one client write to stream to a node.
type UploadWrite struct {
	Ref    *agentv1.UploadRef
	Offset int64
	// Atomic: the node keeps all of the write or none of it.
	Atomic bool
	Body   io.Reader
	// Drop reports whether a failure to read Body asks the node to drop
	// what this write sent (a checksum that does not match), rather than
	// to keep what arrived (the client went away).
	Drop func(error) bool
	// Checksum, called once Body has ended, is the expected digest of the
	// whole file given at its end ("" for none).
	Checksum func() string
}

// WriteUpload streams w.Body to the node's upload as the body of one
// request (uploadwire), up to writeBlock bytes at a time, and returns the
// node's answer. When reading w.Body fails, the error returned is that
// one: the node either dropped the write (w.Drop) or kept what arrived.
func (l *Link) WriteUpload(ctx context.Context, nodeID string, w UploadWrite) (*agentv1.WriteUploadResponse, error) {
	n, err := l.cfg.Store.GetNode(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	c, err := l.conn(n)
	if err != nil {
		return nil, err
	}
	start, err := uploadwire.Encode(&agentv1.WriteUploadRequest{Upload: w.Ref, Offset: w.Offset, Atomic: w.Atomic})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer l.watch(ctx, c, n.Name, cancel)()
	body := &writeBody{w: w, trailer: http.Header{uploadwire.EndTrailer: nil}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+c.addr+uploadwire.Path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set(uploadwire.StartHeader, start)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.ContentLength = -1
	req.Trailer = body.trailer
	resp, err := c.uploads().Do(req)
	var out *agentv1.WriteUploadResponse
	if err == nil {
		out, err = uploadwire.ReadResponse(resp)
		resp.Body.Close()
	} else if cause := context.Cause(ctx); errclass.Of(cause) != nil {
		err = cause // the node stopped answering (watch)
	} else {
		err = agentError(err)
	}
	if rerr := body.stop(); rerr != nil {
		return nil, rerr
	}
	return out, err
}

// watch cancels a write, with an Unavailable error as the cause, when the
// node stops answering while it lasts: a hung agent, a cut network. The
// AgentService's HTTP/2 connection notices that with pings; an upload's
// HTTP/1.1 connection has none, so the node's /healthz is asked on the
// other connection every Interval, and must answer within CheckTimeout.
// A node that answers but reads slowly (a slow disk) is waited for. The
// returned function stops watching.
func (l *Link) watch(ctx context.Context, c *conn, node string, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(l.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := c.probe(ctx, l.cfg.CheckTimeout); err != nil && ctx.Err() == nil {
				cancel(errclass.Wrap(errclass.Unavailable, err, "node %s stopped answering during an upload's write (%s); the client resumes from what the node made durable", node, reason(err)))
				return
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// probe asks the node's /healthz on the AgentService's connection.
func (c *conn) probe(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+c.addr+"/healthz", nil)
	if err != nil {
		return err
	}
	c.request(req)
	resp, err := c.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %s", resp.Status)
	}
	return nil
}

// writeBody is the body of a write to the node: w.Body, ended with the
// trailer that says the write is complete (with the client's checksum),
// or that asks for it to be dropped (w.Drop). Any other failure to read
// w.Body breaks the request off, and the node keeps what arrived.
type writeBody struct {
	w       UploadWrite
	trailer http.Header // set before the body ends, sent after it
	// mu is held while w.Body is read: the transport reads the body in
	// its own goroutine, which may still be in a Read when the node has
	// answered (an early refusal).
	mu      sync.Mutex
	err     error // reading w.Body failed
	stopped bool
}

func (b *writeBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return 0, errWriteOver
	}
	n, err := b.w.Body.Read(p)
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF:
		end := &agentv1.WriteUploadRequest{End: true}
		if b.w.Checksum != nil {
			end.Checksum = b.w.Checksum()
		}
		return n, b.end(end)
	case b.w.Drop != nil && b.w.Drop(err):
		b.err = err
		return n, b.end(&agentv1.WriteUploadRequest{End: true, Drop: true})
	default:
		b.err = err
		return n, err
	}
}

// writeBlock is how many bytes of the client's body the transport is
// given to write at a time (one chunk of the request body, and the bound
// of what a write holds in the control plane's memory).
const writeBlock = 1 << 20

// WriteTo is what the transport copies the body with: large writes, in
// few TLS writes and chunks, instead of its 32 KiB ones.
func (b *writeBody) WriteTo(w io.Writer) (int64, error) {
	return uploadwire.WriteBlocks(w, b, writeBlock)
}

// end sets the trailer to m and ends the body.
func (b *writeBody) end(m *agentv1.WriteUploadRequest) error {
	v, err := uploadwire.Encode(m)
	if err != nil {
		return err
	}
	b.trailer.Set(uploadwire.EndTrailer, v)
	return io.EOF
}

// stop waits for a Read in progress, makes later ones fail, and returns
// the error reading w.Body failed with, if it did.
func (b *writeBody) stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	return b.err
}

var errWriteOver = errors.New("the write to the node is over")

// CancelUpload closes a node's upload and removes its partial file.
func (l *Link) CancelUpload(ctx context.Context, nodeID, jobID string, pool store.Pool) error {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return err
	}
	_, err = c.CancelUpload(ctx, connect.NewRequest(&agentv1.CancelUploadRequest{JobId: jobID, Pool: poolRef(pool)}))
	return agentError(err)
}
