package nodelink

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/store"
)

// HashFile has a node re-read one file of a pool and returns its SHA-256
// (hex); progress receives every report of bytes done on the way.
func (l *Link) HashFile(ctx context.Context, nodeID string, pool store.Pool, relPath string, progress func(*agentv1.HashFileResponse)) (string, error) {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return "", err
	}
	stream, err := c.HashFile(ctx, connect.NewRequest(&agentv1.HashFileRequest{Pool: poolRef(pool), RelPath: relPath}))
	if err != nil {
		return "", agentError(err)
	}
	defer stream.Close()
	var sum string
	for stream.Receive() {
		m := stream.Msg()
		if progress != nil {
			progress(m)
		}
		sum = m.GetSha256()
	}
	if err := stream.Err(); err != nil {
		return "", agentError(err)
	}
	return sum, nil
}
