package nodelink

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/store"
)

// ConvertFile has a node convert one file of a pool with qemu-img and
// returns the result; progress receives every report on the way. Ending
// ctx ends the call, which makes the agent kill qemu-img and remove its
// partial file.
func (l *Link) ConvertFile(ctx context.Context, nodeID string, pool store.Pool, req *agentv1.ConvertFileRequest, progress func(*agentv1.ConvertFileResponse)) (*agentv1.ConvertResult, error) {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	req.Pool = poolRef(pool)
	stream, err := c.ConvertFile(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, agentError(err)
	}
	defer stream.Close()
	var res *agentv1.ConvertResult
	for stream.Receive() {
		m := stream.Msg()
		if progress != nil {
			progress(m)
		}
		if m.GetResult() != nil {
			res = m.GetResult()
		}
	}
	if err := stream.Err(); err != nil {
		return nil, agentError(err)
	}
	if res == nil {
		return nil, errors.New("the agent ended the conversion without a result")
	}
	return res, nil
}

// QemuImgVersion is the qemu-img version the node reported at its last
// successful check: "" when it has none, known is false when the node
// has not answered a check since the control plane started.
func (l *Link) QemuImgVersion(nodeID string) (version string, known bool) {
	s := l.state(nodeID)
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.facts == nil {
		return "", false
	}
	return s.facts.qemuImg.Value(), true
}
