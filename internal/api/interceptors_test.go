package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
)

// heldTokens is a token service whose ListTokens says it started and then
// waits until released; CreateToken answers at once.
type heldTokens struct {
	quarryv1connect.UnimplementedTokenServiceHandler
	entered chan struct{}
	release chan struct{}
}

func (h *heldTokens) ListTokens(ctx context.Context, _ *connect.Request[quarryv1.ListTokensRequest]) (*connect.Response[quarryv1.ListTokensResponse], error) {
	h.entered <- struct{}{}
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return connect.NewResponse(&quarryv1.ListTokensResponse{}), nil
}

func (h *heldTokens) CreateToken(context.Context, *connect.Request[quarryv1.CreateTokenRequest]) (*connect.Response[quarryv1.CreateTokenResponse], error) {
	return connect.NewResponse(&quarryv1.CreateTokenResponse{}), nil
}

// TestReadLimit: with one slot, a second read waits while the first runs
// (and gives up with its caller), other calls do not wait, and a waiting
// read runs once the slot is free.
func TestReadLimit(t *testing.T) {
	h := &heldTokens{entered: make(chan struct{}, 4), release: make(chan struct{})}
	srv := httptest.NewServer(nil)
	t.Cleanup(srv.Close) // after t.Context ends, which ends held reads
	path, handler := quarryv1connect.NewTokenServiceHandler(h, connect.WithInterceptors(ReadLimit(1)))
	srv.Config.Handler = handler
	if path != "/quarry.v1.TokenService/" {
		t.Fatalf("handler path %q", path)
	}
	c := quarryv1connect.NewTokenServiceClient(srv.Client(), srv.URL)
	ctx := t.Context()

	list := func(ctx context.Context) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := c.ListTokens(ctx, connect.NewRequest(&quarryv1.ListTokensRequest{}))
			done <- err
		}()
		return done
	}
	first := list(ctx)
	<-h.entered // the first read holds the slot until released

	if _, err := c.CreateToken(ctx, connect.NewRequest(&quarryv1.CreateTokenRequest{})); err != nil {
		t.Fatalf("CreateToken while a read runs: %v; want it not to wait", err)
	}

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := <-list(short); connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("a second read with the slot taken = %v; want it to wait until its deadline", err)
	}
	select {
	case <-h.entered:
		t.Fatal("a second read ran while the first held the slot")
	default:
	}
	third := list(ctx)

	h.release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatalf("first read: %v", err)
	}
	<-h.entered // the waiting read runs now
	h.release <- struct{}{}
	if err := <-third; err != nil {
		t.Fatalf("the read that waited: %v", err)
	}
}

// TestDurationFromArrival: the duration histogram times a call from the
// request's arrival (Arrived), not from when its handler began: a call
// that arrived a second before its handler ran is observed over a second.
func TestDurationFromArrival(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(nil)
	t.Cleanup(srv.Close)
	_, handler := quarryv1connect.NewTokenServiceHandler(&heldTokens{}, connect.WithInterceptors(Interceptors(slog.New(slog.DiscardHandler), reg)...))
	arrived := time.Now().Add(-time.Second)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), arrivalKey{}, arrived)))
	})
	c := quarryv1connect.NewTokenServiceClient(srv.Client(), srv.URL)
	if _, err := c.CreateToken(t.Context(), connect.NewRequest(&quarryv1.CreateTokenRequest{})); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "quarry_api_request_duration_seconds" {
			continue
		}
		h := f.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 1 || h.GetSampleSum() < 1 {
			t.Errorf("observed %d calls taking %.3f s in all; want 1 of at least 1 s (from its arrival)", h.GetSampleCount(), h.GetSampleSum())
		}
		return
	}
	t.Fatal("no quarry_api_request_duration_seconds in the registry")
}

// TestArrived: Arrived stamps the request with the time it arrived.
func TestArrived(t *testing.T) {
	before := time.Now()
	r := Arrived(httptest.NewRequest(http.MethodGet, "/", nil))
	if got := arrival(r.Context()); got.Before(before) || got.After(time.Now()) {
		t.Errorf("arrival %v; want the time Arrived ran", got)
	}
}
