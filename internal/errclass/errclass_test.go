package errclass

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
)

// TestTable pins the mapping of every class: Connect code, wire value and
// whether it is terminal. A change here changes what callers see.
func TestTable(t *testing.T) {
	for _, tt := range []struct {
		class    *Class
		code     connect.Code
		terminal bool
	}{
		{Transient, connect.CodeUnavailable, false},
		{Terminal, connect.CodeFailedPrecondition, true},
		{NotFound, connect.CodeNotFound, true},
		{Conflict, connect.CodeAlreadyExists, true},
		{InvalidArgument, connect.CodeInvalidArgument, true},
		{FailedPrecondition, connect.CodeFailedPrecondition, false},
		{NoSpace, connect.CodeResourceExhausted, true},
		{PolicyRefused, connect.CodePermissionDenied, true},
		{ChecksumMismatch, connect.CodeFailedPrecondition, true},
		{Fenced, connect.CodeAborted, false},
		{Unavailable, connect.CodeUnavailable, false},
		{PermissionDenied, connect.CodePermissionDenied, true},
		{Unauthenticated, connect.CodeUnauthenticated, true},
		{RateLimited, connect.CodeResourceExhausted, false},
	} {
		t.Run(tt.class.Error(), func(t *testing.T) {
			if got := tt.class.Code(); got != tt.code {
				t.Errorf("code %v, want %v", got, tt.code)
			}
			if got := errors.Is(tt.class, Terminal); got != tt.terminal {
				t.Errorf("terminal %v, want %v", got, tt.terminal)
			}
			if tt.class.wire == agentv1.ErrorClass_ERROR_CLASS_UNSPECIFIED {
				t.Error("no wire value")
			}
		})
	}
	seen := map[agentv1.ErrorClass]*Class{}
	for _, c := range classes {
		if o, dup := seen[c.wire]; dup {
			t.Errorf("%q and %q share the wire value %v", o, c, c.wire)
		}
		seen[c.wire] = c
	}
	if n := len(agentv1.ErrorClass_name) - 1; len(classes) != n {
		t.Errorf("%d classes for %d wire values", len(classes), n)
	}
}

// TestRoundTrip: a class and its message survive ToConnect and FromConnect,
// through a real Connect client and handler.
func TestRoundTrip(t *testing.T) {
	for _, c := range classes {
		t.Run(c.Error(), func(t *testing.T) {
			sent := Wrap(c, fs.ErrPermission, "pool isos: the thing failed; do this next")
			ce := ToConnect(sent).(*connect.Error)
			if ce.Code() != c.Code() || ce.Message() != sent.Error() {
				t.Fatalf("ToConnect = %v %q", ce.Code(), ce.Message())
			}
			got, ok := FromConnect(fmt.Errorf("calling the agent: %w", overTheWire(t, ce)))
			if !ok {
				t.Fatal("FromConnect found no class")
			}
			if Of(got) != c || !errors.Is(got, c) || got.Error() != sent.Error() {
				t.Errorf("FromConnect = %q of class %v, want %q of class %v", got, Of(got), sent, c)
			}
			if errors.Is(got, fs.ErrPermission) {
				t.Error("the cause, internal detail, crossed the wire")
			}
		})
	}
}

// overTheWire answers a real Connect call with ce and returns the error
// the client gets.
func overTheWire(t *testing.T, ce error) error {
	t.Helper()
	const proc = "/quarry.agent.v1.AgentService/GetFacts"
	mux := http.NewServeMux()
	mux.Handle(proc, connect.NewUnaryHandler(proc,
		func(context.Context, *connect.Request[agentv1.GetFactsRequest]) (*connect.Response[agentv1.GetFactsResponse], error) {
			return nil, ce
		}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := connect.NewClient[agentv1.GetFactsRequest, agentv1.GetFactsResponse](srv.Client(), srv.URL+proc)
	_, err := client.CallUnary(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{}))
	if err == nil {
		t.Fatal("the call succeeded")
	}
	return err
}

func TestUnclassed(t *testing.T) {
	for _, tt := range []struct {
		err  error
		code connect.Code
	}{
		{errors.New("disk on fire"), connect.CodeInternal},
		{fmt.Errorf("listing: %w", context.Canceled), connect.CodeCanceled},
		{fmt.Errorf("listing: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded},
	} {
		ce := ToConnect(tt.err).(*connect.Error)
		if ce.Code() != tt.code || Of(tt.err) != nil {
			t.Errorf("%v: code %v, want %v", tt.err, ce.Code(), tt.code)
		}
		got, ok := FromConnect(ce)
		if !ok || Of(got) != nil || got.Error() != tt.err.Error() {
			t.Errorf("%v: FromConnect = %v, %v; want the message without a class", tt.err, got, ok)
		}
	}
	if _, ok := FromConnect(connect.NewError(connect.CodeUnavailable, errors.New("dial tcp: connection refused"))); ok {
		t.Error("FromConnect found a class in an error without the detail")
	}
	if _, ok := FromConnect(errors.New("plain")); ok {
		t.Error("FromConnect found a class in a plain error")
	}
}

// TestSentinel: a package's sentinel made with New stands for its class, and
// errors made from it match both; the outermost class wins.
func TestSentinel(t *testing.T) {
	errInUse := New(FailedPrecondition, "in use")
	err := fmt.Errorf("pool %q still holds images: %w", "isos", errInUse)
	if !errors.Is(err, errInUse) || !errors.Is(err, FailedPrecondition) || Of(err) != FailedPrecondition {
		t.Errorf("wrapped sentinel: class %v", Of(err))
	}
	if err.Error() != `pool "isos" still holds images: in use` {
		t.Errorf("message %q", err)
	}
	msg := New(errInUse, "node %s is assigned to pool isos; unassign it first", "n1")
	if !errors.Is(msg, errInUse) || Of(msg) != FailedPrecondition || msg.Error() != "node n1 is assigned to pool isos; unassign it first" {
		t.Errorf("New from a sentinel: %q of class %v", msg, Of(msg))
	}
	outer := Wrap(Unavailable, New(NotFound, "no such file"), "node n1 is not reachable")
	if Of(outer) != Unavailable || !errors.Is(outer, NotFound) {
		t.Errorf("Wrap: class %v, want Unavailable outermost", Of(outer))
	}
}
