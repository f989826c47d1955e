package api

import (
	"context"
	"errors"
	"time"
)

// DefaultSweepInterval is how often RunSweeps removes expired login
// material when no interval is given.
const DefaultSweepInterval = 10 * time.Minute

// Sweep removes the login material that has expired by now: dashboard
// sessions, single sign-on tokens (each sign-in makes one, and an expired
// one can never be used again) with their sessions, and sign-ins sent to
// the identity provider that never came back. Before it ran, sessions went
// only when someone else logged in, and SSO tokens never.
func (a *Auth) Sweep(ctx context.Context) error {
	now := a.Now()
	if a.OIDC != nil {
		a.OIDC.prune(now)
	}
	errSessions := a.Store.DeleteExpiredSessions(ctx, now)
	n, errTokens := a.Store.DeleteExpiredSSOTokens(ctx, now)
	if n > 0 {
		a.Logger.InfoContext(ctx, "removed expired single sign-on tokens", "count", n)
	}
	return errors.Join(errSessions, errTokens)
}

// RunSweeps sweeps once now and then every interval (DefaultSweepInterval
// when not positive) until ctx is done. Every replica may run it: the
// deletions are idempotent.
func (a *Auth) RunSweeps(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := a.Sweep(ctx); err != nil && ctx.Err() == nil {
			a.Logger.WarnContext(ctx, "removing expired sessions and single sign-on tokens; trying again later", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
