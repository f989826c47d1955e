package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
)

// describe writes events as "op pool path" lines, to compare.
func describe(evs []*agentv1.PoolEvent) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%v %s %s", e.GetOp(), e.GetPoolId(), e.GetRelPath()))
	}
	return out
}

func settled(pool, rel string) *agentv1.PoolEvent {
	return &agentv1.PoolEvent{PoolId: pool, RelPath: rel, Op: agentv1.FileOp_FILE_OP_SETTLED}
}

// TestEventLogCursor: a caller new to the log, or behind what it keeps,
// is told to rescan every watched pool; a caller within it gets the
// events after its cursor, a batch at a time; reading takes nothing away
// from another caller.
func TestEventLogCursor(t *testing.T) {
	notified := 0
	l := newEventLog(func() { notified++ })
	watched := []string{"p1", "p2"}

	evs, c, more := l.since(&agentv1.EventCursor{}, watched)
	if got := describe(evs); !slices.Equal(got, []string{"FILE_OP_OVERFLOW p1 ", "FILE_OP_OVERFLOW p2 "}) || more || c.GetLog() == "" || c.GetSeq() != 0 {
		t.Fatalf("a new caller got %q, %v, more %v; want an overflow per watched pool and the cursor at 0", got, c, more)
	}
	if evs, c2, _ := l.since(c, watched); len(evs) != 0 || c2.GetSeq() != 0 {
		t.Fatalf("an up-to-date caller got %q at %v; want nothing", describe(evs), c2)
	}

	l.add(settled("p1", "iso/a.iso"))
	l.add(settled("p2", "iso/b.iso"))
	if notified != 2 {
		t.Errorf("notified %d times for 2 events", notified)
	}
	first, c1, _ := l.since(c, watched)
	again, c1b, _ := l.since(c, watched) // another caller at the same place
	want := []string{"FILE_OP_SETTLED p1 iso/a.iso", "FILE_OP_SETTLED p2 iso/b.iso"}
	if !slices.Equal(describe(first), want) || !slices.Equal(describe(again), want) || c1.GetSeq() != 2 || c1b.GetSeq() != 2 {
		t.Fatalf("events after the cursor: %q at %v and %q at %v; want %q twice, cursor at 2", describe(first), c1, describe(again), c1b, want)
	}

	// A cursor of another log (the agent restarted) or past the log's end.
	for _, bad := range []*agentv1.EventCursor{{Log: "another", Seq: 2}, {Log: c.GetLog(), Seq: 9}} {
		if evs, c3, _ := l.since(bad, watched); len(evs) != 2 || evs[0].GetOp() != agentv1.FileOp_FILE_OP_OVERFLOW || c3.GetSeq() != 2 {
			t.Errorf("cursor %v got %q at %v; want an overflow per watched pool, cursor at 2", bad, describe(evs), c3)
		}
	}

	// More than one answer holds, then more than the log keeps.
	for i := range maxEventsAnswered + 10 {
		l.add(settled("p1", fmt.Sprintf("iso/%d.iso", i)))
	}
	evs, c4, more := l.since(c1, watched)
	if len(evs) != maxEventsAnswered || !more || c4.GetSeq() != 2+maxEventsAnswered {
		t.Fatalf("got %d events, more %v, cursor %v; want %d, more, cursor at %d", len(evs), more, c4, maxEventsAnswered, 2+maxEventsAnswered)
	}
	if evs, c5, more := l.since(c4, watched); len(evs) != 10 || more || describe(evs)[9] != fmt.Sprintf("FILE_OP_SETTLED p1 iso/%d.iso", maxEventsAnswered+9) || c5.GetSeq() != 12+maxEventsAnswered {
		t.Fatalf("the rest: %d events, more %v, cursor %v", len(evs), more, c5)
	}
	for i := range keptEvents {
		l.add(settled("p2", fmt.Sprintf("iso/x%d.iso", i)))
	}
	if evs, _, _ := l.since(c1, watched); len(evs) != 2 || evs[0].GetOp() != agentv1.FileOp_FILE_OP_OVERFLOW {
		t.Errorf("a caller behind what the log keeps got %d events (%v first); want an overflow per watched pool", len(evs), evs[0].GetOp())
	}
}

// TestGetFactsCarriesFileEvents: a check watches the pools it names that
// the node mounts; an ISO copied into one is in the next check's events;
// a pool the checks no longer name is no longer watched.
func TestGetFactsCarriesFileEvents(t *testing.T) {
	root := t.TempDir()
	srv := filepath.Join(root, "srv")
	for _, p := range []string{"p1", "p2"} {
		writeMarkerFile(t, filepath.Join(srv, p), p, p)
		mkdir(t, filepath.Join(srv, p, "iso"))
	}
	a := startAgent(t, Config{FSRoot: root})
	c := protocols[1].client(t, a)
	refs := []*agentv1.PoolRef{ref("p1", "/srv/p1"), ref("p2", "/srv/p2"), ref("gone", "/srv/none")}

	resp := check(t, c, refs, &agentv1.EventCursor{})
	if got := describe(resp.GetEvents()); !slices.Equal(got, []string{"FILE_OP_OVERFLOW p1 ", "FILE_OP_OVERFLOW p2 "}) {
		t.Fatalf("first check's events %q; want an overflow per mounted pool", got)
	}
	cursor := resp.GetEventsCursor()

	// collect checks until an event for rel comes, and returns every
	// event it got.
	collect := func(refs []*agentv1.PoolRef, want string) []string {
		t.Helper()
		var got []string
		eventually(t, 10*time.Second, func() error {
			resp := check(t, c, refs, cursor)
			got, cursor = append(got, describe(resp.GetEvents())...), resp.GetEventsCursor()
			if !slices.Contains(got, want) {
				return fmt.Errorf("events %q; want %q among them", got, want)
			}
			return nil
		})
		return got
	}
	writeFile(t, filepath.Join(srv, "p2", "iso", "new.iso"), "an ISO")
	collect(refs, "FILE_OP_SETTLED p2 iso/new.iso")

	// Checks that name only p1: p2's watch stops, so a file written there
	// is no event.
	check(t, c, refs[:1], nil)
	if a.isos.get("p2") != nil || a.isos.get("p1") == nil {
		t.Fatal("after a check naming only p1, p2 is watched or p1 is not")
	}
	writeFile(t, filepath.Join(srv, "p2", "iso", "unseen.iso"), "an ISO")
	writeFile(t, filepath.Join(srv, "p1", "iso", "seen.iso"), "an ISO")
	if got := collect(refs[:1], "FILE_OP_SETTLED p1 iso/seen.iso"); slices.Contains(got, "FILE_OP_SETTLED p2 iso/unseen.iso") {
		t.Errorf("events %q name a pool no check names any more", got)
	}
}

func check(t *testing.T, c agentv1connect.AgentServiceClient, refs []*agentv1.PoolRef, cursor *agentv1.EventCursor) *agentv1.GetFactsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.GetFacts(ctx, connect.NewRequest(&agentv1.GetFactsRequest{Pools: refs, Events: cursor}))
	if err != nil {
		t.Fatal(err)
	}
	if cursor == nil && (resp.Msg.GetEventsCursor() != nil || len(resp.Msg.GetEvents()) > 0) {
		t.Fatalf("a check that asked for no events got %v", resp.Msg)
	}
	return resp.Msg
}

// eventually calls cond until it returns nil, failing the test with its
// last error after timeout (quarrytest.Eventually, which this package's
// tests cannot import).
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for err := cond(); err != nil; err = cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
