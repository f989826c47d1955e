package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/quarry-project/quarry/internal/events"
	"github.com/quarry-project/quarry/internal/store"
)

// busChannel is the PostgreSQL NOTIFY channel the replicas share.
const busChannel = "quarry"

// maxBusPayload keeps a notification under PostgreSQL's 8000-byte limit.
const maxBusPayload = 7000

// message is one notification between replicas.
type message struct {
	From string `json:"from"`
	// Events that changed the state (type "events"): resource, change, id.
	Events [][3]any `json:"events,omitempty"`
	// Work for the leader: "download" or "verify" and a job id; "request"
	// and a leader request's id; "answered" and the id of one answered.
	Kind string `json:"kind,omitempty"`
	ID   string `json:"id,omitempty"`
}

// bus carries, between the replicas on one PostgreSQL database, the
// changes their event streams tell watchers and the work followers hand
// the leader, with LISTEN/NOTIFY on one connection of its own for
// listening and one for sending.
type bus struct {
	url   string
	self  string
	store store.Store
	hub   *events.Hub
	log   *slog.Logger
	// onMessage handles work messages from other replicas (and from
	// this one: a request this replica made while it led).
	onMessage func(m message)
	// onReconnect is called when listening starts again.
	onReconnect func()

	out chan message

	mu      sync.Mutex
	waiters map[string]chan struct{} // leader requests answered, by id
}

func newBus(url, self string, st store.Store, hub *events.Hub, log *slog.Logger) *bus {
	b := &bus{url: url, self: self, store: st, hub: hub, log: log.With("component", "bus"),
		out: make(chan message, 1024), waiters: map[string]chan struct{}{}}
	hub.Forward(b.forwardEvents)
	return b
}

// forwardEvents queues this replica's events for the others.
func (b *bus) forwardEvents(evs []events.Event) {
	m := message{From: b.self}
	for _, e := range evs {
		m.Events = append(m.Events, [3]any{int(e.Resource), int(e.Change), e.ID})
	}
	b.send(m)
}

// send queues m; when the queue is full the others get a resync instead.
func (b *bus) send(m message) {
	select {
	case b.out <- m:
	default:
		b.log.Warn("notifications queue full; the other replicas' watchers will resync")
	}
}

// Run listens and sends until ctx is done.
func (b *bus) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { b.listen(ctx) })
	wg.Go(func() { b.sender(ctx) })
	wg.Wait()
}

// connect dials PostgreSQL until it answers or ctx ends.
func (b *bus) connect(ctx context.Context) (*pgx.Conn, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := pgx.Connect(cctx, b.url)
		cancel()
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		b.log.Warn("connecting for notifications; trying again", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (b *bus) listen(ctx context.Context) {
	for ctx.Err() == nil {
		c, err := b.connect(ctx)
		if err != nil {
			return
		}
		if _, err := c.Exec(ctx, "LISTEN "+busChannel); err != nil {
			c.Close(context.Background())
			continue
		}
		// Whatever happened while not listening is unknown: watchers
		// refetch, waiters look, and the leader looks at every job.
		b.hub.Deliver(events.Event{Resource: events.Resync})
		b.wakeAll()
		if b.onReconnect != nil {
			b.onReconnect()
		}
		for {
			n, err := c.WaitForNotification(ctx)
			if err != nil {
				if ctx.Err() == nil {
					b.log.Warn("lost the notifications connection; reconnecting", "err", err)
				}
				break
			}
			b.receive(ctx, n.Payload)
		}
		c.Close(context.Background())
	}
}

func (b *bus) receive(ctx context.Context, payload string) {
	var m message
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		b.log.Warn("a notification that is not a message", "err", err)
		return
	}
	if len(m.Events) > 0 {
		if m.From == b.self {
			return
		}
		evs := make([]events.Event, 0, len(m.Events))
		for _, raw := range m.Events {
			r, _ := raw[0].(float64)
			ch, _ := raw[1].(float64)
			id, _ := raw[2].(string)
			e := events.Event{Resource: events.Resource(r), Change: events.Change(ch), ID: id}
			if e.Resource == events.Job && id != "" && e.Change != events.Deleted {
				// Watchers get the job as written: read it back.
				if j, err := b.store.GetJob(ctx, id); err == nil {
					e.Job = &j
				}
			}
			evs = append(evs, e)
		}
		b.hub.Deliver(evs...)
		return
	}
	if m.Kind == "answered" {
		b.wake(m.ID)
		return
	}
	if b.onMessage != nil {
		b.onMessage(m)
	}
}

// sender sends queued messages, events batched into as few notifications
// as fit.
func (b *bus) sender(ctx context.Context) {
	var c *pgx.Conn
	defer func() {
		if c != nil {
			c.Close(context.Background())
		}
	}()
	for {
		var m message
		select {
		case <-ctx.Done():
			return
		case m = <-b.out:
		}
		batch := []message{m}
		if len(m.Events) > 0 {
		more:
			for n := len(m.Events); n < 200; {
				select {
				case next := <-b.out:
					if len(next.Events) == 0 {
						batch = append(batch, next)
						break more
					}
					batch[0].Events = append(batch[0].Events, next.Events...)
					n += len(next.Events)
				default:
					break more
				}
			}
		}
		for _, m := range batch {
			for _, p := range payloads(m) {
				for attempt := 0; ; attempt++ {
					if c == nil {
						var err error
						if c, err = b.connect(ctx); err != nil {
							return
						}
					}
					_, err := c.Exec(ctx, "SELECT pg_notify($1, $2)", busChannel, p)
					if err == nil {
						break
					}
					c.Close(context.Background())
					c = nil
					if ctx.Err() != nil || attempt > 0 {
						b.log.Warn("sending a notification failed", "err", err)
						break
					}
				}
			}
		}
	}
}

// payloads splits m into notifications that fit.
func payloads(m message) []string {
	b, _ := json.Marshal(m)
	if len(b) <= maxBusPayload || len(m.Events) < 2 {
		return []string{string(b)}
	}
	half := len(m.Events) / 2
	a, c := m, m
	a.Events, c.Events = m.Events[:half], m.Events[half:]
	return append(payloads(a), payloads(c)...)
}

// waiter returns a channel closed when request id is answered (or the
// connection was lost, when it may have been).
func (b *bus) waiter(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	b.mu.Lock()
	b.waiters[id] = ch
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.waiters, id)
		b.mu.Unlock()
	}
}

func (b *bus) wake(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch, ok := b.waiters[id]; ok {
		close(ch)
		delete(b.waiters, id)
	}
}

func (b *bus) wakeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, ch := range b.waiters {
		close(ch)
		delete(b.waiters, id)
	}
}
