package agent

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
)

// keptEvents is how many file events the log keeps for the control plane
// to collect: a control plane that falls further behind (it was away, the
// node was cut off) is told to rescan the pools instead.
const keptEvents = 4096

// maxEventsAnswered is the most events one check carries; the answer says
// when more wait.
const maxEventsAnswered = 1024

// eventLog is the agent's file events, numbered in the order they
// happened, for the control plane's checks to collect from where each
// caller's cursor is. Reading takes nothing away: a deposed leader that
// still checks the node cannot make events vanish for the new one.
type eventLog struct {
	id     string // new at every start
	notify func() // told of every new event; must not block

	mu     sync.Mutex
	first  uint64 // seq of events[0]; 1 for the first event
	events []*agentv1.PoolEvent
}

func newEventLog(notify func()) *eventLog {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	if notify == nil {
		notify = func() {}
	}
	return &eventLog{id: hex.EncodeToString(b[:]), notify: notify, first: 1}
}

// add logs an event, dropping the oldest beyond keptEvents.
func (l *eventLog) add(ev *agentv1.PoolEvent) {
	l.mu.Lock()
	if len(l.events) == keptEvents {
		n := copy(l.events, l.events[keptEvents/4:])
		clear(l.events[n:])
		l.events = l.events[:n]
		l.first += keptEvents / 4
	}
	l.events = append(l.events, ev)
	l.mu.Unlock()
	l.notify()
}

// since answers a check that asks for the events after cursor c, with the
// pools watched now: the events, the cursor to send next and whether more
// wait. A cursor of another log, or of events no longer kept, gets one
// overflow event per watched pool: the caller rescans them.
func (l *eventLog) since(c *agentv1.EventCursor, watched []string) ([]*agentv1.PoolEvent, *agentv1.EventCursor, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.first + uint64(len(l.events)) // seq of the next event
	if c.GetLog() != l.id || c.GetSeq()+1 < l.first || c.GetSeq() >= next {
		evs := make([]*agentv1.PoolEvent, 0, len(watched))
		for _, id := range watched {
			evs = append(evs, &agentv1.PoolEvent{PoolId: id, Op: agentv1.FileOp_FILE_OP_OVERFLOW})
		}
		return evs, &agentv1.EventCursor{Log: l.id, Seq: next - 1}, false
	}
	from := int(c.GetSeq() + 1 - l.first)
	to := min(len(l.events), from+maxEventsAnswered)
	evs := slices.Clone(l.events[from:to])
	return evs, &agentv1.EventCursor{Log: l.id, Seq: l.first + uint64(to) - 1}, to < len(l.events)
}
