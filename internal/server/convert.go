package server

import (
	"context"

	"github.com/quarry-project/quarry/internal/convert"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/store"
)

// fileConverter adapts the node link to the conversion controller.
type fileConverter struct{ link *nodelink.Link }

func (c fileConverter) Convert(ctx context.Context, nodeID string, pool store.Pool, r convert.Request, progress func(convert.Progress)) (convert.Result, error) {
	res, err := c.link.ConvertFile(ctx, nodeID, pool, &agentv1.ConvertFileRequest{
		JobId: r.JobID, Src: r.Src, Dest: r.Dest, SrcFormat: r.SrcFormat, Format: r.Format, AdoptExisting: r.AdoptExisting,
	}, func(m *agentv1.ConvertFileResponse) {
		progress(convert.Progress{Phase: m.GetPhase(), Percent: m.GetPercent(), BytesDone: m.GetBytesDone(), BytesTotal: m.GetBytesTotal()})
	})
	if err != nil {
		return convert.Result{}, err
	}
	return convert.Result{SHA256: res.GetSha256(), Size: res.GetSize(), Format: res.GetFormat(), VirtualSize: res.GetVirtualSize(),
		ModTime: res.GetModTime().AsTime(), Check: res.GetCheck()}, nil
}

func (c fileConverter) QemuImgVersion(nodeID string) (string, bool) {
	return c.link.QemuImgVersion(nodeID)
}
