package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/quarry-project/quarry/internal/discovery"
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/store"
)

// isoLister adapts the node link to the discovery controller.
type isoLister struct{ link *nodelink.Link }

func (l isoLister) ListISOs(ctx context.Context, nodeID string, pool store.Pool, progress func(int)) ([]discovery.File, error) {
	files, err := l.link.ListISOs(ctx, nodeID, pool, progress)
	if err != nil {
		return nil, err
	}
	out := make([]discovery.File, len(files))
	for i, f := range files {
		out[i] = discovery.File{
			RelPath: f.GetRelPath(), Size: f.GetSize(), ModTime: f.GetModTime().AsTime(),
			Label: f.GetLabel(), Bootable: f.GetBootable(), Problem: f.GetProblem(),
			Writing: f.GetWriting(), Settled: f.GetSettled(), Format: f.GetFormat(),
		}
	}
	return out, nil
}

// fileDeleter removes pool files through the nodes the node-choice helper
// returns, trying each in order.
type fileDeleter struct {
	chooser *placement.Chooser
	link    *nodelink.Link
}

func (d fileDeleter) DeleteFile(ctx context.Context, pool store.Pool, relPath string) error {
	choice, err := d.chooser.Choose(ctx, pool.ID)
	if err != nil {
		return err
	}
	var failures []string
	for _, cand := range choice.Kept {
		err := d.link.DeleteFile(ctx, cand.Node.ID, pool, relPath)
		if err == nil {
			return nil
		}
		failures = append(failures, fmt.Sprintf("%s: %v", cand.Node.Name, err))
	}
	return errclass.New(errclass.Unavailable, "could not delete %s from pool %q: %s; try again when a node that mounts it is back", relPath, pool.Name, strings.Join(failures, "; "))
}

// poolEvents turns agents' file events into scans of the pools they name.
func poolEvents(c *discovery.Controller) nodelink.PoolEventHandler {
	return func(_ string, ev *agentv1.PoolEvent) {
		c.Trigger(ev.GetPoolId(), discovery.TriggerEvent)
	}
}
