package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// conflicting is a real store whose UpdateJob first fails with ErrConflict
// conflicts times (-1: always), as when the job keeps changing hands.
type conflicting struct {
	store.Store
	conflicts atomic.Int32
}

func (s *conflicting) UpdateJob(ctx context.Context, j store.Job) error {
	if s.conflicts.Load() != 0 {
		s.conflicts.Add(-1)
		return store.ErrConflict
	}
	return s.Store.UpdateJob(ctx, j)
}

// TestCancelJobConflicts: CancelJob never answers success for a cancel it
// did not save. A few conflicts are retried on a fresh read; a job that
// keeps changing is refused with unavailable and a sentence that says to
// try again; an ended job is refused with failed_precondition as before.
func TestCancelJobConflicts(t *testing.T) {
	for _, tt := range []struct {
		name      string
		conflicts int32
		ended     bool
		code      connect.Code // 0: success
		msg       string
	}{
		{"no conflict", 0, false, 0, ""},
		{"a few conflicts", cancelAttempts - 1, false, 0, ""},
		{"conflicts every time", -1, false, connect.CodeUnavailable, "the cancel was not saved; try again"},
		{"ended", 0, true, connect.CodeFailedPrecondition, "already ended (succeeded); nothing to cancel"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			st := &conflicting{Store: openStore(t)}
			job := createDownload(t, st.Store, tt.ended)
			st.conflicts.Store(tt.conflicts)
			kicked := false
			s := &JobService{Store: st, Enqueue: func(string) { kicked = true }, Now: time.Now,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}

			resp, err := s.CancelJob(ctx, connect.NewRequest(&quarryv1.CancelJobRequest{Id: job.ID}))
			saved, gerr := st.GetJob(ctx, job.ID)
			if gerr != nil {
				t.Fatal(gerr)
			}
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("CancelJob = %v", err)
				}
				if v := resp.Msg.GetJob(); v.GetId() != job.ID || v.GetMessage() != "cancelling" {
					t.Errorf("CancelJob answered %v", v)
				}
				if !saved.CancelRequested || !kicked {
					t.Errorf("success answered, but cancel saved=%v, controller kicked=%v", saved.CancelRequested, kicked)
				}
				return
			}
			if ce := new(connect.Error); !errors.As(err, &ce) || ce.Code() != tt.code || !strings.Contains(ce.Message(), tt.msg) {
				t.Fatalf("CancelJob = %v; want %v saying %q", err, tt.code, tt.msg)
			}
			if saved.CancelRequested {
				t.Error("refused, yet the cancel was saved")
			}
		})
	}
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "quarry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// createDownload stores a queued download, or, with ended, one that
// succeeded.
func createDownload(t *testing.T, st store.Store, ended bool) store.Job {
	t.Helper()
	ctx, now := t.Context(), time.Now()
	p := store.Pool{ID: "p1", Name: "isos", Type: "dir", Path: "/srv/isos", CreatedAt: now}
	if err := st.CreatePool(ctx, p); err != nil {
		t.Fatal(err)
	}
	im := store.Image{ID: "im1", PoolID: p.ID, Name: "a.iso", Kind: store.KindISO, State: store.ImagePending,
		RelPath: "iso/a.iso", Origin: store.OriginDownloaded, CreatedAt: now, UpdatedAt: now}
	j := store.Job{ID: "j1", Kind: "download", State: store.JobQueued, ImageID: im.ID, PoolID: p.ID,
		Source: "https://mirror.example/a.iso", URL: "https://mirror.example/a.iso", Message: "queued", CreatedAt: now, UpdatedAt: now}
	j, err := st.CreateDownload(ctx, im, j)
	if err != nil {
		t.Fatal(err)
	}
	if ended {
		j.State, j.FinishedAt, j.Message = store.JobSucceeded, now, "done"
		im.State = store.ImageReady
		if err := st.FinishJob(ctx, j, im); err != nil {
			t.Fatal(err)
		}
	}
	return j
}
