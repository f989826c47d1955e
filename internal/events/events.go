// Package events tells whoever watches the control plane (the dashboard's
// EventService/Watch streams) what changed in its state.
//
// The one source of events is the store: Store wraps a store.Store and
// publishes an event after every write that changes what a person sees, so
// no controller or handler has to remember to. Subscribers get events in
// order; one that falls behind is sent a Resync instead of what it missed,
// and refetches.
package events

import (
	"sync"

	"github.com/quarry-project/quarry/internal/store"
)

// Resource is the kind of record that changed.
type Resource int

const (
	// Resync: events were lost; refetch everything shown.
	Resync Resource = iota
	Node
	Pool
	Image
	Job
	Scan
	Token
	Audit
)

// Change says what happened to it.
type Change int

const (
	Updated Change = iota
	Created
	Deleted
)

// Event is one change. ID is empty when several records of the resource
// changed at once.
type Event struct {
	Resource Resource
	Change   Change
	ID       string
	// Job is the job as written, for job events.
	Job *store.Job
}

// Hub fans events out to subscribers.
type Hub struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
	// forward, when set, also gets what Publish sends (not what Deliver
	// does): to other control-plane replicas.
	forward func([]Event)
}

// Forward makes Publish also hand its events to f, which must not block;
// Deliver does not. Set it before events flow.
func (h *Hub) Forward(f func([]Event)) {
	h.mu.Lock()
	h.forward = f
	h.mu.Unlock()
}

// NewHub returns a hub without subscribers.
func NewHub() *Hub { return &Hub{subs: map[*Subscription]struct{}{}} }

// Subscription receives events until it is closed.
type Subscription struct {
	hub *Hub
	// C carries the events; a Resync event stands for any that did not
	// fit.
	C      chan Event
	behind bool // guarded by hub.mu
}

// subscriptionBuffer is how many events a subscriber may be behind before
// it is told to resync: a few seconds of a busy cluster.
const subscriptionBuffer = 256

// Subscribe returns a subscription; Close ends it.
func (h *Hub) Subscribe() *Subscription {
	s := &Subscription{hub: h, C: make(chan Event, subscriptionBuffer)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Close stops delivery to s.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	delete(s.hub.subs, s)
	s.hub.mu.Unlock()
}

// Publish sends evs to every subscriber without blocking, and forwards
// them when a forward is set.
func (h *Hub) Publish(evs ...Event) {
	if len(evs) == 0 {
		return
	}
	h.Deliver(evs...)
	h.mu.Lock()
	f := h.forward
	h.mu.Unlock()
	if f != nil {
		f(evs)
	}
}

// Deliver sends evs to this hub's subscribers only: events that came from
// another replica.
func (h *Hub) Deliver(evs ...Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		for _, e := range evs {
			if s.behind {
				// Room again: one resync stands for everything missed.
				select {
				case s.C <- Event{Resource: Resync}:
					s.behind = false
				default:
					continue
				}
			}
			select {
			case s.C <- e:
			default:
				s.behind = true
			}
		}
	}
}
