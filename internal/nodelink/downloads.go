package nodelink

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/store"
)

// StartDownload hands a download to a node's agent.
func (l *Link) StartDownload(ctx context.Context, nodeID string, req *agentv1.StartDownloadRequest) (*agentv1.DownloadStatus, error) {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	resp, err := c.StartDownload(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, agentError(err)
	}
	return resp.Msg.GetStatus(), nil
}

// WatchDownload calls f with every status of a node's download until it
// ends or the stream breaks. The agent sends its status at least every
// third of a health interval; a stream silent for a whole interval (a hung
// agent, a network cut without a reset) is ended with ErrSilent.
func (l *Link) WatchDownload(ctx context.Context, nodeID, jobID string, f func(*agentv1.DownloadStatus)) error {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return err
	}
	idle := l.cfg.Interval
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	silence := time.AfterFunc(idle, func() { cancel(ErrSilent) })
	defer silence.Stop()
	s, err := c.WatchDownload(ctx, connect.NewRequest(&agentv1.WatchDownloadRequest{JobId: jobID, HeartbeatMs: max(idle/3, 10*time.Millisecond).Milliseconds()}))
	if err != nil {
		return streamError(ctx, err)
	}
	defer s.Close()
	for s.Receive() {
		silence.Reset(idle)
		f(s.Msg().GetStatus())
	}
	if err := s.Err(); err != nil {
		return streamError(ctx, err)
	}
	return nil
}

// ErrSilent ends a stream whose agent sent nothing for a health interval.
var ErrSilent = errclass.New(errclass.Unavailable, "the agent sent nothing for a health interval (hung, or cut off from the network)")

// streamError explains why a stream from an agent ended.
func streamError(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrSilent) {
		return cause
	}
	return agentError(err)
}

// CancelDownload stops a node's download and removes its partial file.
func (l *Link) CancelDownload(ctx context.Context, nodeID, jobID string, pool store.Pool) error {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return err
	}
	_, err = c.CancelDownload(ctx, connect.NewRequest(&agentv1.CancelDownloadRequest{JobId: jobID, Pool: poolRef(pool)}))
	if err != nil {
		return agentError(err)
	}
	return nil
}

// LookupChecksum asks a node to fetch a checksum file (through the URL
// policy) and returns the digest it gives for fileName.
func (l *Link) LookupChecksum(ctx context.Context, nodeID string, req *agentv1.LookupChecksumRequest) (string, error) {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return "", err
	}
	resp, err := c.LookupChecksum(ctx, connect.NewRequest(req))
	if err != nil {
		return "", agentError(err)
	}
	return resp.Msg.GetDigest(), nil
}
