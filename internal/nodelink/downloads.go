package nodelink

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/store"
)

// StartDownload hands a download to a node's agent.
func (l *Link) StartDownload(ctx context.Context, nodeID string, req *agentv1.StartDownloadRequest) (*agentv1.DownloadStatus, error) {
	c, err := l.Client(ctx, nodeID)
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
// ends or the stream breaks.
func (l *Link) WatchDownload(ctx context.Context, nodeID, jobID string, f func(*agentv1.DownloadStatus)) error {
	c, err := l.Client(ctx, nodeID)
	if err != nil {
		return err
	}
	s, err := c.WatchDownload(ctx, connect.NewRequest(&agentv1.WatchDownloadRequest{JobId: jobID}))
	if err != nil {
		return agentError(err)
	}
	defer s.Close()
	for s.Receive() {
		f(s.Msg().GetStatus())
	}
	if err := s.Err(); err != nil {
		return agentError(err)
	}
	return nil
}

// CancelDownload stops a node's download and removes its partial file.
func (l *Link) CancelDownload(ctx context.Context, nodeID, jobID string, pool store.Pool) error {
	c, err := l.Client(ctx, nodeID)
	if err != nil {
		return err
	}
	_, err = c.CancelDownload(ctx, connect.NewRequest(&agentv1.CancelDownloadRequest{JobId: jobID, Pool: poolRef(pool)}))
	if err != nil {
		return agentError(err)
	}
	return nil
}
