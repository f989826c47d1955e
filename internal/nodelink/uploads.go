package nodelink

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/store"
)

// uploadChunk is how many bytes of an upload go in one message to the
// agent: with HTTP/2 flow control it bounds what one write holds in the
// control plane's memory.
const uploadChunk = 1 << 20

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

// WriteUpload streams w.Body to the node's upload, a few chunks in flight
// at a time, and returns the node's answer. When reading w.Body fails, the
// error returned is that one: the node either dropped the write (w.Drop)
// or kept what arrived.
func (l *Link) WriteUpload(ctx context.Context, nodeID string, w UploadWrite) (*agentv1.WriteUploadResponse, error) {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := c.WriteUpload(sctx)
	if err := stream.Send(&agentv1.WriteUploadRequest{Upload: w.Ref, Offset: w.Offset, Atomic: w.Atomic}); err != nil {
		_, err = stream.CloseAndReceive()
		return nil, agentError(err)
	}
	buf := make([]byte, uploadChunk)
	for {
		n, rerr := io.ReadFull(w.Body, buf)
		if rerr == io.ErrUnexpectedEOF {
			rerr = io.EOF
		}
		if n > 0 {
			if err := stream.Send(&agentv1.WriteUploadRequest{Data: buf[:n]}); err != nil {
				_, err = stream.CloseAndReceive()
				if err == nil {
					err = errors.New("the agent ended the write early")
				}
				return nil, agentError(err)
			}
		}
		switch {
		case rerr == io.EOF:
			end := &agentv1.WriteUploadRequest{End: true}
			if w.Checksum != nil {
				end.Checksum = w.Checksum()
			}
			if err := stream.Send(end); err != nil && !errors.Is(err, io.EOF) {
				return nil, agentError(err)
			}
			resp, err := stream.CloseAndReceive()
			if err != nil {
				return nil, agentError(err)
			}
			return resp.Msg, nil
		case rerr != nil && w.Drop != nil && w.Drop(rerr):
			if err := stream.Send(&agentv1.WriteUploadRequest{End: true, Drop: true}); err == nil {
				stream.CloseAndReceive()
			}
			return nil, rerr
		case rerr != nil:
			// Break the stream: the node keeps what arrived (unless the
			// write is atomic) and the client resumes from there.
			cancel()
			stream.CloseAndReceive()
			return nil, rerr
		}
	}
}

// CancelUpload closes a node's upload and removes its partial file.
func (l *Link) CancelUpload(ctx context.Context, nodeID, jobID string, pool store.Pool) error {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return err
	}
	_, err = c.CancelUpload(ctx, connect.NewRequest(&agentv1.CancelUploadRequest{JobId: jobID, Pool: poolRef(pool)}))
	return agentError(err)
}
