package store

import (
	"context"
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
)

// ErrFenced: a write made for a leader's term that has ended (another
// replica took the lease since). The writer must stop leading.
var ErrFenced = errclass.New(errclass.Unavailable, "this control plane no longer leads (its lease was taken by another replica)")

// Lease is the leader lease as one TryLease call left it.
type Lease struct {
	// Held: the caller holds the lease at Epoch until ExpiresAt.
	Held bool
	// Holder and Epoch are the current holder's, the caller's when Held.
	Holder    string
	Epoch     int64
	ExpiresAt time.Time // on the database's clock
}

// LeaseRequest asks for the leader lease.
type LeaseRequest struct {
	// Holder names the asking replica; unique per process.
	Holder string
	// Epoch is the epoch the holder holds now (0: none). Holder and Epoch
	// together renew the lease, even when it expired meanwhile: nobody
	// else has written with a later epoch then.
	Epoch int64
	// TTL is how long the lease lasts from now on the database's clock.
	TTL time.Duration
	// Steal takes the lease whoever holds it: for a store only one process
	// can open (SQLite, whose data directory is locked).
	Steal bool
}

// LeaderRequest is work a follower asks the leader to do for it, and the
// answer.
type LeaderRequest struct {
	ID       string
	Kind     string
	Request  string
	Response string
	Answered bool
	Created  time.Time
}

// LeaseStore elects the leader among control-plane replicas.
type LeaseStore interface {
	// TryLease renews the lease when req.Holder holds it at req.Epoch,
	// takes it at the next epoch when it expired (or when req.Steal), and
	// otherwise reports who holds it (Held false).
	TryLease(ctx context.Context, req LeaseRequest) (Lease, error)
	// ReleaseLease ends holder's lease at epoch now, so that another
	// replica takes over without waiting for it to expire; a no-op when
	// holder no longer holds it.
	ReleaseLease(ctx context.Context, holder string, epoch int64) error
	// LeaderEpoch is the epoch of the lease now (0 when never taken).
	LeaderEpoch(ctx context.Context) (int64, error)

	// CreateLeaderRequest stores a request; AnswerLeaderRequest its answer
	// (ErrNotFound when it is gone, ErrConflict when answered already);
	// GetLeaderRequest reads it; DeleteLeaderRequest removes it.
	CreateLeaderRequest(ctx context.Context, r LeaderRequest) error
	AnswerLeaderRequest(ctx context.Context, id, response string) error
	GetLeaderRequest(ctx context.Context, id string) (LeaderRequest, error)
	DeleteLeaderRequest(ctx context.Context, id string) error
}

// SecretStore keeps what every replica must share, encrypted by its caller.
type SecretStore interface {
	// GetSecret returns the value stored under name; ErrNotFound when none.
	GetSecret(ctx context.Context, name string) ([]byte, error)
	// CreateSecret stores value under name; ErrConflict when one is there
	// (another replica stored it first: read that one).
	CreateSecret(ctx context.Context, name string, value []byte, at time.Time) error
}

// fenceKey is the context key of a Fence.
type fenceKey struct{}

// Fence is what a leader's controllers' writes carry: the store refuses
// them with ErrFenced, in the transaction that would have written, once
// the lease's epoch is no longer Epoch, and calls Lost.
type Fence struct {
	Epoch int64
	// Lost, when not nil, is called (once or more) when a write is fenced.
	Lost func()
}

// WithFence returns ctx whose writes carry f.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceFrom returns the fence ctx carries, if any.
func FenceFrom(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok
}
