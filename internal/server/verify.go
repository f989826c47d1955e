package server

import (
	"context"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/verify"
)

// fileHasher adapts the node link to the verify controller.
type fileHasher struct{ link *nodelink.Link }

func (h fileHasher) HashFile(ctx context.Context, nodeID string, pool store.Pool, relPath string, progress func(verify.Progress)) (string, error) {
	return h.link.HashFile(ctx, nodeID, pool, relPath, func(m *agentv1.HashFileResponse) {
		progress(verify.Progress{BytesDone: m.GetBytesDone(), BytesTotal: m.GetBytesTotal(), BytesPerSec: m.GetBytesPerSecond()})
	})
}
