package storetest

import (
	"context"
	"crypto/sha256"
	"slices"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// token returns an API token created at t0 whose secret hash is derived
// from id, so every token's hash differs.
func token(id string) store.Token {
	h := sha256.Sum256([]byte("secret-" + id))
	return store.Token{
		ID:         id,
		Name:       "token " + id,
		Kind:       store.TokenAPI,
		Role:       store.RoleOperator,
		SecretHash: h[:],
		CreatedAt:  t0,
	}
}

func joinToken(id string) store.Token {
	t := token(id)
	t.Kind, t.Role, t.SingleUse = store.TokenJoin, "", true
	t.ExpiresAt = at(time.Hour)
	return t
}

func session(id, tokenID string) store.Session {
	return store.Session{
		ID:        id,
		TokenID:   tokenID,
		CSRF:      "csrf-" + id,
		CreatedAt: at(time.Minute),
		ExpiresAt: at(13 * time.Hour),
	}
}

func mustCreateTokens(t *testing.T, s store.Store, toks ...store.Token) {
	t.Helper()
	for _, tok := range toks {
		if err := s.CreateToken(context.Background(), tok); err != nil {
			t.Fatalf("CreateToken(%s): %v", tok.ID, err)
		}
	}
}

func mustGetToken(t *testing.T, s store.Store, id string) store.Token {
	t.Helper()
	tok, err := s.GetToken(context.Background(), id)
	if err != nil {
		t.Fatalf("GetToken(%s): %v", id, err)
	}
	return tok
}

func mustCreateSessions(t *testing.T, s store.Store, ss ...store.Session) {
	t.Helper()
	for _, sess := range ss {
		if err := s.CreateSession(context.Background(), sess); err != nil {
			t.Fatalf("CreateSession(%s): %v", sess.ID, err)
		}
	}
}

// wantSessions fails unless exactly the sessions with ids present exist
// among ids all.
func wantSessions(t *testing.T, s store.Store, all []string, present ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, id := range present {
		want[id] = true
	}
	for _, id := range all {
		_, err := s.GetSession(context.Background(), id)
		switch {
		case want[id] && err != nil:
			t.Errorf("GetSession(%s): %v, want the session", id, err)
		case !want[id] && err == nil:
			t.Errorf("GetSession(%s) found a session that should be gone", id)
		case !want[id]:
			wantErr(t, "GetSession("+id+")", err, store.ErrNotFound, id)
		}
	}
}

func testTokens(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()

	t.Run("create and get", func(t *testing.T) {
		s := open(t)
		api := token("t1")
		api.ExpiresAt = at(30 * 24 * time.Hour)
		api.LastUsedAt = at(time.Minute)
		api.UseCount = 7
		join := joinToken("t2")
		mustCreateTokens(t, s, api, join)
		wantEqual(t, "GetToken(api)", mustGetToken(t, s, "t1"), api)
		wantEqual(t, "GetToken(join)", mustGetToken(t, s, "t2"), join)
	})

	t.Run("zero values come back zero", func(t *testing.T) {
		s := open(t)
		tok := store.Token{ID: "t1", Kind: store.TokenAPI}
		mustCreateTokens(t, s, tok)
		wantEqual(t, "GetToken", mustGetToken(t, s, "t1"), tok)
	})

	t.Run("secret hash bytes survive", func(t *testing.T) {
		s := open(t)
		tok := token("t1")
		tok.SecretHash = make([]byte, 256)
		for i := range tok.SecretHash {
			tok.SecretHash[i] = byte(i)
		}
		mustCreateTokens(t, s, tok)
		wantEqual(t, "GetToken", mustGetToken(t, s, "t1"), tok)
	})

	t.Run("times come back in UTC, to the microsecond", func(t *testing.T) {
		s := open(t)
		tok := token("t1")
		tok.CreatedAt = time.Date(2025, 3, 4, 7, 6, 7, 123456789, time.FixedZone("CEST", 2*3600))
		mustCreateTokens(t, s, tok)
		got := mustGetToken(t, s, "t1").CreatedAt
		if got.Location() != time.UTC || !got.Equal(tok.CreatedAt.Truncate(time.Microsecond)) {
			t.Errorf("CreatedAt = %v, want %v in UTC", got, tok.CreatedAt.Truncate(time.Microsecond))
		}
	})

	t.Run("duplicate id", func(t *testing.T) {
		s := open(t)
		first := token("t1")
		mustCreateTokens(t, s, first)
		again := joinToken("t1")
		wantErr(t, "CreateToken", s.CreateToken(ctx, again), store.ErrConflict, "t1")
		wantEqual(t, "token after conflict", mustGetToken(t, s, "t1"), first)
	})

	t.Run("not found", func(t *testing.T) {
		s := open(t)
		mustCreateTokens(t, s, token("t1"))
		tests := []struct {
			name string
			op   func() error
		}{
			{"GetToken", func() error { _, err := s.GetToken(ctx, "tx"); return err }},
			{"RevokeToken", func() error { return s.RevokeToken(ctx, "tx", at(time.Hour)) }},
			{"UseToken", func() error { _, err := s.UseToken(ctx, "tx", at(time.Hour)); return err }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantErr(t, tt.name, tt.op(), store.ErrNotFound, "tx")
			})
		}
		wantEqual(t, "other token", mustGetToken(t, s, "t1"), token("t1"))
	})

	t.Run("list oldest first, then by id", func(t *testing.T) {
		s := open(t)
		if ts, err := s.ListTokens(ctx); err != nil || len(ts) != 0 {
			t.Fatalf("ListTokens on empty store = %v, %v", ts, err)
		}
		var toks []store.Token
		for _, c := range []struct {
			id  string
			age time.Duration
		}{{"a", 3 * time.Hour}, {"d", time.Hour}, {"b", 2 * time.Hour}, {"c", time.Hour}, {"e", 0}} {
			tok := token(c.id)
			tok.CreatedAt = at(c.age)
			toks = append(toks, tok)
		}
		mustCreateTokens(t, s, toks...)
		got, err := s.ListTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// e (t0), c and d (t0+1h, by id), b (+2h), a (+3h).
		wantEqual(t, "ListTokens", got, []store.Token{toks[4], toks[3], toks[1], toks[2], toks[0]})
	})

	t.Run("revoke keeps the first time", func(t *testing.T) {
		s := open(t)
		mustCreateTokens(t, s, token("t1"), token("t2"))
		if err := s.RevokeToken(ctx, "t1", at(time.Hour)); err != nil {
			t.Fatal(err)
		}
		want := token("t1")
		want.RevokedAt = at(time.Hour)
		wantEqual(t, "token after revoke", mustGetToken(t, s, "t1"), want)
		if err := s.RevokeToken(ctx, "t1", at(2*time.Hour)); err != nil {
			t.Fatalf("revoking again: %v", err)
		}
		if err := s.RevokeToken(ctx, "t1", at(time.Minute)); err != nil {
			t.Fatalf("revoking again with an earlier time: %v", err)
		}
		wantEqual(t, "token after revoking again", mustGetToken(t, s, "t1"), want)
		wantEqual(t, "other token", mustGetToken(t, s, "t2"), token("t2"))
	})

	t.Run("revoke deletes the token's sessions", func(t *testing.T) {
		s := open(t)
		mustCreateTokens(t, s, token("t1"), token("t2"))
		mustCreateSessions(t, s, session("s1", "t1"), session("s2", "t1"), session("s3", "t2"))
		if err := s.RevokeToken(ctx, "t1", at(time.Hour)); err != nil {
			t.Fatal(err)
		}
		wantSessions(t, s, []string{"s1", "s2", "s3"}, "s3")
		// A session made after the revocation (a caller that did not
		// check) is removed by revoking again.
		mustCreateSessions(t, s, session("s4", "t1"))
		if err := s.RevokeToken(ctx, "t1", at(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		wantSessions(t, s, []string{"s1", "s2", "s3", "s4"}, "s3")
		if got := mustGetToken(t, s, "t1").RevokedAt; !got.Equal(at(time.Hour)) {
			t.Errorf("RevokedAt = %v, want the first revocation's", got)
		}
	})
}

func testUseToken(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	use := func(t *testing.T, s store.Store, id string, d time.Duration) store.Token {
		t.Helper()
		tok, err := s.UseToken(ctx, id, at(d))
		if err != nil {
			t.Fatalf("UseToken(%s): %v", id, err)
		}
		return tok
	}

	t.Run("counts every use of a reusable token", func(t *testing.T) {
		s := open(t)
		mustCreateTokens(t, s, token("t1"), token("t2"))
		want := token("t1")
		for i := 1; i <= 3; i++ {
			got := use(t, s, "t1", time.Duration(i)*time.Minute)
			want.UseCount, want.LastUsedAt = i, at(time.Duration(i)*time.Minute)
			wantEqual(t, "token returned by UseToken", got, want)
			wantEqual(t, "token after UseToken", mustGetToken(t, s, "t1"), want)
		}
		wantEqual(t, "other token", mustGetToken(t, s, "t2"), token("t2"))
	})

	t.Run("single-use token is used once", func(t *testing.T) {
		s := open(t)
		mustCreateTokens(t, s, joinToken("j1"))
		want := joinToken("j1")
		want.UseCount, want.LastUsedAt = 1, at(time.Minute)
		wantEqual(t, "first use", use(t, s, "j1", time.Minute), want)
		for range 2 {
			tok, err := s.UseToken(ctx, "j1", at(2*time.Minute))
			wantErr(t, "second use", err, store.ErrConflict, "j1")
			if tok.ID != "" {
				t.Errorf("failed UseToken returned token %+v, want the zero Token", tok)
			}
		}
		wantEqual(t, "token after refused uses", mustGetToken(t, s, "j1"), want)
	})

	t.Run("single-use token created as used", func(t *testing.T) {
		s := open(t)
		tok := joinToken("j1")
		tok.UseCount = 1
		mustCreateTokens(t, s, tok)
		_, err := s.UseToken(ctx, "j1", at(time.Minute))
		wantErr(t, "UseToken", err, store.ErrConflict, "j1")
	})
}

func testSessions(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	setup := func(t *testing.T) store.Store {
		s := open(t)
		mustCreateTokens(t, s, token("t1"), token("t2"))
		return s
	}

	t.Run("create and get", func(t *testing.T) {
		s := setup(t)
		want := session("s1", "t1")
		mustCreateSessions(t, s, want, session("s2", "t2"))
		got, err := s.GetSession(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "GetSession", got, want)
	})

	t.Run("unknown session", func(t *testing.T) {
		s := setup(t)
		_, err := s.GetSession(ctx, "sx")
		wantErr(t, "GetSession", err, store.ErrNotFound, "sx")
	})

	t.Run("unknown token", func(t *testing.T) {
		s := setup(t)
		wantErr(t, "CreateSession", s.CreateSession(ctx, session("s1", "tx")), store.ErrNotFound, "tx")
		wantSessions(t, s, []string{"s1"})
	})

	t.Run("duplicate id", func(t *testing.T) {
		s := setup(t)
		mustCreateSessions(t, s, session("s1", "t1"))
		wantErr(t, "CreateSession", s.CreateSession(ctx, session("s1", "t2")), store.ErrConflict, "s1")
		got, err := s.GetSession(ctx, "s1")
		if err != nil {
			t.Fatal(err)
		}
		wantEqual(t, "session after conflict", got, session("s1", "t1"))
	})

	t.Run("delete is idempotent", func(t *testing.T) {
		s := setup(t)
		mustCreateSessions(t, s, session("s1", "t1"), session("s2", "t1"))
		for range 2 {
			if err := s.DeleteSession(ctx, "s1"); err != nil {
				t.Fatalf("DeleteSession: %v", err)
			}
		}
		if err := s.DeleteSession(ctx, "never-existed"); err != nil {
			t.Errorf("DeleteSession of a missing session: %v", err)
		}
		wantSessions(t, s, []string{"s1", "s2"}, "s2")
	})

	t.Run("delete expired", func(t *testing.T) {
		s := setup(t)
		expiring := func(id string, d time.Duration) store.Session {
			sess := session(id, "t1")
			sess.ExpiresAt = at(d)
			return sess
		}
		never := session("never", "t2")
		never.ExpiresAt = time.Time{}
		mustCreateSessions(t, s,
			expiring("past", time.Hour-time.Microsecond),
			expiring("now", time.Hour),
			expiring("future", 2*time.Hour),
			never)
		if err := s.DeleteExpiredSessions(ctx, at(time.Hour)); err != nil {
			t.Fatal(err)
		}
		all := []string{"past", "now", "future", "never"}
		wantSessions(t, s, all, "now", "future", "never")
		if err := s.DeleteExpiredSessions(ctx, at(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
		wantSessions(t, s, all, "never")
	})

	t.Run("delete expired sso tokens", func(t *testing.T) {
		s := open(t)
		expiring := func(id string, kind store.TokenKind, d time.Duration) store.Token {
			tok := token(id)
			tok.Kind, tok.ExpiresAt = kind, at(d)
			if d == 0 {
				tok.ExpiresAt = time.Time{}
			}
			return tok
		}
		mustCreateTokens(t, s,
			expiring("sso-past", store.TokenSSO, time.Hour-time.Microsecond),
			expiring("sso-now", store.TokenSSO, time.Hour),
			expiring("sso-later", store.TokenSSO, 2*time.Hour),
			expiring("sso-never", store.TokenSSO, 0),
			expiring("api-past", store.TokenAPI, time.Minute),
			expiring("join-past", store.TokenJoin, time.Minute))
		sess := func(id, tokenID string) store.Session {
			ss := session(id, tokenID)
			ss.ExpiresAt = at(30 * time.Hour) // outlives its token: only the token's expiry may remove it
			return ss
		}
		mustCreateSessions(t, s, sess("s-past", "sso-past"), sess("s-later", "sso-later"), sess("s-api", "api-past"))
		allTokens := []string{"sso-past", "sso-now", "sso-later", "sso-never", "api-past", "join-past"}
		allSessions := []string{"s-past", "s-later", "s-api"}
		wantTokens := func(present ...string) {
			t.Helper()
			for _, id := range allTokens {
				_, err := s.GetToken(ctx, id)
				switch {
				case slices.Contains(present, id) && err != nil:
					t.Errorf("GetToken(%s): %v, want the token", id, err)
				case !slices.Contains(present, id):
					wantErr(t, "GetToken("+id+")", err, store.ErrNotFound, id)
				}
			}
		}
		sweep := func(d time.Duration, want int) {
			t.Helper()
			n, err := s.DeleteExpiredSSOTokens(ctx, at(d))
			if err != nil || n != want {
				t.Fatalf("DeleteExpiredSSOTokens(t0+%v) = %d, %v; want %d", d, n, err, want)
			}
		}

		sweep(time.Hour, 1)
		wantTokens("sso-now", "sso-later", "sso-never", "api-past", "join-past")
		wantSessions(t, s, allSessions, "s-later", "s-api")
		sweep(time.Hour, 0)

		sweep(3*time.Hour, 2)
		wantTokens("sso-never", "api-past", "join-past")
		wantSessions(t, s, allSessions, "s-api")
		toks, err := s.ListTokens(ctx)
		if err != nil || len(toks) != 3 {
			t.Errorf("ListTokens after the sweeps: %d tokens, %v; want the 3 kept", len(toks), err)
		}
	})
}
