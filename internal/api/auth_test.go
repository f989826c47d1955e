package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// brokenNodes panics in RegisterNode and fails DeleteNode.
type brokenNodes struct {
	quarryv1connect.UnimplementedNodeServiceHandler
}

func (brokenNodes) RegisterNode(context.Context, *connect.Request[quarryv1.RegisterNodeRequest]) (*connect.Response[quarryv1.RegisterNodeResponse], error) {
	panic("boom")
}

func (brokenNodes) DeleteNode(context.Context, *connect.Request[quarryv1.DeleteNodeRequest]) (*connect.Response[quarryv1.DeleteNodeResponse], error) {
	return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("cannot delete today"))
}

// TestAuditSurvivesPanics: neither a failing nor a panicking handler skips
// the audit entry, whichever side of the panic recovery the guard sits on.
func TestAuditSurvivesPanics(t *testing.T) {
	for _, guardOutside := range []bool{true, false} {
		t.Run(map[bool]string{true: "guard outside recovery", false: "guard inside recovery"}[guardOutside], func(t *testing.T) {
			ctx := t.Context()
			st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "quarry.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			tok, secret := auth.New(store.TokenAPI)
			tok.Name, tok.Role, tok.CreatedAt = "ops", store.RoleAdmin, time.Now()
			if err := st.CreateToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			a := &Auth{Store: st, Now: time.Now, Logger: log, Limiter: auth.NewLimiter(10, time.Minute, time.Now)}
			recovery := connect.WithRecover(func(context.Context, connect.Spec, http.Header, any) error {
				return connect.NewError(connect.CodeInternal, errors.New("internal error"))
			})
			opts := []connect.HandlerOption{connect.WithInterceptors(a.Interceptor()), recovery}
			if !guardOutside {
				opts = []connect.HandlerOption{recovery, connect.WithInterceptors(a.Interceptor())}
			}
			mux := http.NewServeMux()
			mux.Handle(quarryv1connect.NewNodeServiceHandler(brokenNodes{}, opts...))
			hs := httptest.NewServer(mux)
			defer hs.Close()
			c := quarryv1connect.NewNodeServiceClient(&http.Client{Transport: &auth.Transport{Token: secret}}, hs.URL)

			_, err = c.RegisterNode(ctx, connect.NewRequest(&quarryv1.RegisterNodeRequest{Name: "n1"}))
			if connect.CodeOf(err) != connect.CodeInternal {
				t.Errorf("RegisterNode that panics: %v, want internal", err)
			}
			_, err = c.DeleteNode(ctx, connect.NewRequest(&quarryv1.DeleteNodeRequest{Id: "node-1"}))
			if connect.CodeOf(err) != connect.CodeFailedPrecondition {
				t.Errorf("DeleteNode that fails: %v, want failed_precondition", err)
			}

			entries, err := st.ListAudit(ctx, 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 2 {
				t.Fatalf("audit log has %d entries, want 2: %+v", len(entries), entries)
			}
			del, reg := entries[0], entries[1]
			if reg.Procedure != "quarry.v1.NodeService/RegisterNode" || reg.Result != "internal" || reg.Target != "n1" || reg.Actor != "ops ("+tok.ID+")" {
				t.Errorf("entry of the panicking call: %+v", reg)
			}
			if del.Procedure != "quarry.v1.NodeService/DeleteNode" || del.Result != "failed_precondition" || del.Message != "cannot delete today" || del.Target != "node-1" {
				t.Errorf("entry of the failing call: %+v", del)
			}
		})
	}
}

func TestClientOf(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5000":                "127.0.0.1",
		"[::ffff:10.0.0.1]:80":          "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443":    "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1%eth0]:1": "2001:db8:1:2::/64",
		"not an address":                "not an address",
	} {
		if got := clientOf(in); got != want {
			t.Errorf("clientOf(%q) = %q, want %q", in, got, want)
		}
	}
}
