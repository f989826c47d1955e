package e2e

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// eventLog collects what one EventService/Watch stream hears.
type eventLog struct{ ch chan *quarryv1.Event }

// watchEvents opens a Watch stream with clients (the Connect protocol over
// HTTP/1.1, as a browser speaks it) and returns once it is ready.
func watchEvents(t *testing.T, clients quarrytest.Clients) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := clients.Events.Watch(ctx, connect.NewRequest(&quarryv1.WatchRequest{}))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if !s.Receive() || !s.Msg().GetReady() {
		cancel()
		t.Fatalf("the stream's first message is not ready: %v %v", s.Msg(), s.Err())
	}
	l := &eventLog{ch: make(chan *quarryv1.Event, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s.Receive() {
			for _, e := range s.Msg().GetEvents() {
				l.ch <- e
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return l
}

// next waits for an event that match accepts, failing after d.
func (l *eventLog) next(t *testing.T, d time.Duration, what string, match func(*quarryv1.Event) bool) *quarryv1.Event {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case e := <-l.ch:
			if match(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s within %v", what, d)
			return nil
		}
	}
}

// none fails if an event that match accepts is among those heard so far.
func (l *eventLog) none(t *testing.T, what string, match func(*quarryv1.Event) bool) {
	t.Helper()
	for {
		select {
		case e := <-l.ch:
			if match(e) {
				t.Errorf("heard %s: %v", what, e)
			}
		default:
			return
		}
	}
}

// TestEventStream: the dashboard's live stream tells every role what it may
// read as it changes — pools, node state, images and job progress with
// the job itself — and keeps tokens and the audit log to admins.
func TestEventStream(t *testing.T) {
	s := quarrytest.StartServer(t)
	viewer := watchEvents(t, s.ClientsFor(createToken(t, s, store.RoleViewer, "screen", time.Hour)))
	admin := watchEvents(t, s.Clients)

	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	mkdir(t, a.Opts.LocalPath("/srv/local"))
	isNode := func(e *quarryv1.Event) bool {
		return e.GetResource() == quarryv1.Resource_RESOURCE_NODE && e.GetId() == a.NodeID
	}
	viewer.next(t, 10*time.Second, "event of node n1", isNode)

	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "local", Path: "/srv/local", AssignedNodeIds: []string{a.NodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	poolID := resp.Msg.GetPool().GetId()
	viewer.next(t, 10*time.Second, "pool created", func(e *quarryv1.Event) bool {
		return e.GetResource() == quarryv1.Resource_RESOURCE_POOL && e.GetChange() == quarryv1.Change_CHANGE_CREATED && e.GetId() == poolID
	})

	o := origintest.New(t)
	f := o.Add("/disk.img", origintest.Random(8*mib, 51))
	f.RateLimit(4 * mib)
	var jobID string
	quarrytest.Eventually(t, 10*time.Second, func() error {
		r, err := s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{
			Url: f.URL(), StoragePoolId: poolID, Checksum: "sha256:" + f.SHA256()}))
		if err != nil {
			return err
		}
		jobID = r.Msg.GetJob().GetId()
		return nil
	})
	progress := viewer.next(t, 10*time.Second, "job progress", func(e *quarryv1.Event) bool {
		return e.GetResource() == quarryv1.Resource_RESOURCE_JOB && e.GetId() == jobID && e.GetJob().GetProgress().GetBytesDone() > 0
	})
	if progress.GetJob().GetState() != quarryv1.JobState_JOB_STATE_RUNNING || progress.GetJob().GetNodeName() != "n1" {
		t.Errorf("progress event carries job %v", progress.GetJob())
	}
	viewer.next(t, 30*time.Second, "job succeeded", func(e *quarryv1.Event) bool {
		return e.GetId() == jobID && e.GetJob().GetState() == quarryv1.JobState_JOB_STATE_SUCCEEDED
	})
	viewer.next(t, 10*time.Second, "image updated", func(e *quarryv1.Event) bool {
		return e.GetResource() == quarryv1.Resource_RESOURCE_IMAGE
	})

	// Tokens and the audit log: admins only.
	createToken(t, s, store.RoleViewer, "other", time.Hour)
	admin.next(t, 10*time.Second, "token created", func(e *quarryv1.Event) bool {
		return e.GetResource() == quarryv1.Resource_RESOURCE_TOKEN
	})
	admin.next(t, 10*time.Second, "audit entry", func(e *quarryv1.Event) bool {
		return e.GetResource() == quarryv1.Resource_RESOURCE_AUDIT
	})
	// The admin heard it; the viewer's stream, sent in the same order, has
	// had time to carry it too.
	viewer.none(t, "a token or audit event as a viewer", func(e *quarryv1.Event) bool {
		r := e.GetResource()
		return r == quarryv1.Resource_RESOURCE_TOKEN || r == quarryv1.Resource_RESOURCE_AUDIT
	})
	// Server streams report a refusal on the first Receive.
	anon, err := s.Anonymous().Events.Watch(t.Context(), connect.NewRequest(&quarryv1.WatchRequest{}))
	if err == nil {
		if anon.Receive() || connect.CodeOf(anon.Err()) != connect.CodeUnauthenticated {
			t.Errorf("a watch without a token: %v", anon.Err())
		}
		anon.Close()
	} else if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("a watch without a token: %v", err)
	}
}

// TestEventStreamEndsWithItsToken: a stream opened with a token that is
// then revoked ends unauthenticated at its next heartbeat, so an idle
// dashboard goes back to sign-in.
func TestEventStreamEndsWithItsToken(t *testing.T) {
	s := quarrytest.StartServer(t, quarrytest.WithEventHeartbeat(200*time.Millisecond))
	secret := createToken(t, s, store.RoleViewer, "wall", time.Hour)
	stream, err := s.ClientsFor(secret).Events.Watch(t.Context(), connect.NewRequest(&quarryv1.WatchRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || !stream.Msg().GetReady() {
		t.Fatalf("first message: %v %v", stream.Msg(), stream.Err())
	}
	toks, err := s.Tokens.ListTokens(t.Context(), connect.NewRequest(&quarryv1.ListTokensRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks.Msg.GetTokens() {
		if tok.GetName() == "wall" {
			if _, err := s.Tokens.RevokeToken(t.Context(), connect.NewRequest(&quarryv1.RevokeTokenRequest{Id: tok.GetId()})); err != nil {
				t.Fatal(err)
			}
		}
	}
	ended := make(chan error, 1)
	go func() {
		for stream.Receive() {
		}
		ended <- stream.Err()
	}()
	select {
	case err := <-ended:
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("the stream ended with %v; want unauthenticated", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a revoked token still runs 10 s later")
	}
}
