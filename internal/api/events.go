package api

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/events"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/store"
)

// EventService implements quarry.v1.EventService: the dashboard's one live
// stream of what changed.
type EventService struct {
	quarryv1connect.UnimplementedEventServiceHandler
	Store  store.Store
	Hub    *events.Hub
	Logger *slog.Logger
	// Heartbeat is how often an idle stream sends an empty message (15 s);
	// Batch how long changes are gathered into one message (100 ms).
	Heartbeat, Batch time.Duration
}

var resources = map[events.Resource]quarryv1.Resource{
	events.Node: quarryv1.Resource_RESOURCE_NODE, events.Pool: quarryv1.Resource_RESOURCE_POOL,
	events.Image: quarryv1.Resource_RESOURCE_IMAGE, events.Job: quarryv1.Resource_RESOURCE_JOB,
	events.Scan: quarryv1.Resource_RESOURCE_SCAN, events.Token: quarryv1.Resource_RESOURCE_TOKEN,
	events.Audit: quarryv1.Resource_RESOURCE_AUDIT,
}

var changes = map[events.Change]quarryv1.Change{
	events.Created: quarryv1.Change_CHANGE_CREATED, events.Updated: quarryv1.Change_CHANGE_UPDATED,
	events.Deleted: quarryv1.Change_CHANGE_DELETED,
}

// Watch streams the changes the caller's role may read until the call
// ends, or until the token or session that opened it is revoked or
// expires (checked at every heartbeat: the stream then ends
// unauthenticated, and the dashboard signs in again). A subscriber that
// fell behind gets every resource as changed, and refetches.
func (s *EventService) Watch(ctx context.Context, _ *connect.Request[quarryv1.WatchRequest], stream *connect.ServerStream[quarryv1.WatchResponse]) error {
	heartbeat, batch := s.Heartbeat, s.Batch
	if heartbeat <= 0 {
		heartbeat = 15 * time.Second
	}
	if batch <= 0 {
		batch = 100 * time.Millisecond
	}
	caller, _ := CallerFrom(ctx)
	sub := s.Hub.Subscribe()
	defer sub.Close()
	if err := stream.Send(&quarryv1.WatchResponse{Ready: true}); err != nil {
		return err
	}
	idle := time.NewTicker(heartbeat)
	defer idle.Stop()
	checked := time.Now()
	// recheck ends the stream once its credentials did, at most every
	// heartbeat, busy or idle.
	recheck := func() error {
		if time.Since(checked) < heartbeat {
			return nil
		}
		checked = time.Now()
		if err := StillAuthenticated(ctx); err != nil {
			return toConnect(ctx, s.Logger, err)
		}
		return nil
	}
	for {
		var pending []events.Event
		select {
		case <-ctx.Done():
			return nil
		case <-idle.C:
			if err := recheck(); err != nil {
				return err
			}
			if err := stream.Send(&quarryv1.WatchResponse{}); err != nil {
				return err
			}
			continue
		case e := <-sub.C:
			pending = append(pending, e)
		}
		// Gather what follows closely: a scan or a busy download changes
		// many things at once.
		gather := time.NewTimer(batch)
	gathering:
		for len(pending) < 256 {
			select {
			case e := <-sub.C:
				pending = append(pending, e)
			case <-gather.C:
				break gathering
			case <-ctx.Done():
				gather.Stop()
				return nil
			}
		}
		gather.Stop()
		if err := recheck(); err != nil {
			return err
		}
		resp := &quarryv1.WatchResponse{Events: s.view(ctx, caller, pending)}
		if len(resp.Events) == 0 {
			continue
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		idle.Reset(heartbeat)
	}
}

// view turns the events the caller may see into their API form; of
// several changes of one job only the last is sent.
func (s *EventService) view(ctx context.Context, caller Caller, evs []events.Event) []*quarryv1.Event {
	admin := caller.Role == store.RoleAdmin
	lastOfJob := map[string]int{}
	for i, e := range evs {
		if e.Resource == events.Job && e.Job != nil {
			lastOfJob[e.ID] = i
		}
	}
	var out []*quarryv1.Event
	for i, e := range evs {
		if e.Resource == events.Resync {
			// Missed events: everything may have changed.
			for r, v := range resources {
				if admin || (r != events.Token && r != events.Audit) {
					out = append(out, &quarryv1.Event{Resource: v, Change: quarryv1.Change_CHANGE_UPDATED})
				}
			}
			continue
		}
		if !admin && (e.Resource == events.Token || e.Resource == events.Audit) {
			continue
		}
		if e.Job != nil && lastOfJob[e.ID] != i {
			continue
		}
		v := &quarryv1.Event{Resource: resources[e.Resource], Change: changes[e.Change], Id: e.ID}
		if e.Job != nil {
			if j, err := jobView(ctx, s.Store, *e.Job, false); err == nil {
				v.Job = j
			}
		}
		out = append(out, v)
	}
	return out
}
