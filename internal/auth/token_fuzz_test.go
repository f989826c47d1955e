package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/quarry-project/quarry/internal/store"
)

// FuzzParse checks that Parse never panics, refuses with ErrInvalid, and
// that whatever it accepts is exactly the token it returns, put back
// together.
func FuzzParse(f *testing.F) {
	_, api := New(store.TokenAPI)
	_, join := New(store.TokenJoin)
	for _, s := range []string{api, join, "", "qk__", "qk_" + strings.Repeat("_", 80), " " + api + " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, id, secret, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %q is not ErrInvalid", s, err)
			}
			return
		}
		if kind != store.TokenAPI && kind != store.TokenJoin {
			t.Fatalf("Parse(%q) kind %q", s, kind)
		}
		if len(id) != 2*idBytes || len(secret) != 2*secretLen {
			t.Fatalf("Parse(%q) id %q secret %q: wrong lengths", s, id, secret)
		}
		if got := prefix(kind) + "_" + id + "_" + secret; got != strings.TrimSpace(s) {
			t.Fatalf("Parse(%q) = %q, %q, %q, which put together is %q", s, kind, id, secret, got)
		}
	})
}
