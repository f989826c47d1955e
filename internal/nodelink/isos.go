package nodelink

import (
	"context"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/store"
)

func poolRef(p store.Pool) *agentv1.PoolRef {
	return &agentv1.PoolRef{Id: p.ID, Name: p.Name, Path: p.Path}
}

// ListISOs asks a node for the ISO files of a pool and the files under its
// images/; progress receives the number of files listed so far.
func (l *Link) ListISOs(ctx context.Context, nodeID string, pool store.Pool, progress func(seen int)) ([]*agentv1.IsoFile, error) {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	stream, err := c.ListISOs(ctx, connect.NewRequest(&agentv1.ListISOsRequest{Pool: poolRef(pool), IncludeImages: true}))
	if err != nil {
		return nil, agentError(err)
	}
	defer stream.Close()
	var files []*agentv1.IsoFile
	for stream.Receive() {
		files = append(files, stream.Msg().GetFiles()...)
		if progress != nil {
			progress(len(files))
		}
	}
	if err := stream.Err(); err != nil {
		return nil, agentError(err)
	}
	return files, nil
}

// DeleteFile removes one file of a pool through a node; a file already
// gone is not an error.
func (l *Link) DeleteFile(ctx context.Context, nodeID string, pool store.Pool, relPath string) error {
	ctx, c, err := l.Client(ctx, nodeID)
	if err != nil {
		return err
	}
	_, err = c.DeleteFile(ctx, connect.NewRequest(&agentv1.DeleteFileRequest{Pool: poolRef(pool), RelPath: relPath}))
	if err != nil {
		return agentError(err)
	}
	return nil
}

// PoolEventHandler receives the file events agents report: a pool whose
// iso/ directory changed on a node.
type PoolEventHandler func(nodeID string, ev *agentv1.PoolEvent)

// eventCursors is where the link is in every node's file events: the
// handler the checks give them to (nil: the checks do not ask for
// events), and each node's cursor, valid for that handler only.
type eventCursors struct {
	handler PoolEventHandler
	gen     uint64 // the handler's; a cursor of an older one is none
}

// HandleEvents makes the checks of every node ask for its file events
// from now on and hand them to h, until stop is called. The first check of
// a node after it gets one overflow event per pool the node watches: what
// changed before is found by scanning them.
func (l *Link) HandleEvents(h PoolEventHandler) (stop func()) {
	l.mu.Lock()
	l.events.gen++
	gen := l.events.gen
	l.events.handler = h
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		if l.events.gen == gen {
			l.events.handler = nil
		}
		l.mu.Unlock()
	}
}

// eventsOf returns the events handler, its generation and node st's
// cursor for it (empty when it has none); a nil handler and cursor when no
// one handles events.
func (l *Link) eventsOf(st *nodeState) (PoolEventHandler, uint64, *agentv1.EventCursor) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.events.handler == nil {
		return nil, 0, nil
	}
	if st.cursorGen != l.events.gen {
		return l.events.handler, l.events.gen, &agentv1.EventCursor{}
	}
	return l.events.handler, l.events.gen, &agentv1.EventCursor{Log: st.cursorLog, Seq: st.cursorSeq}
}

// deliver hands a check's events to h and moves the node's cursor past
// them (unless the handler changed meanwhile); more events waiting get the
// node checked again at once.
func (l *Link) deliver(nodeID string, st *nodeState, h PoolEventHandler, gen uint64, resp *agentv1.GetFactsResponse) {
	for _, ev := range resp.GetEvents() {
		h(nodeID, ev)
	}
	l.mu.Lock()
	if c := resp.GetEventsCursor(); l.events.gen == gen && c != nil {
		st.cursorLog, st.cursorSeq, st.cursorGen = c.GetLog(), c.GetSeq(), gen
	}
	l.mu.Unlock()
	if resp.GetMoreEvents() {
		l.Kick(nodeID)
	}
}
