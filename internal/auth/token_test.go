package auth

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/quarry-project/quarry/internal/store"
)

func TestParse(t *testing.T) {
	id := "0123456789ab"
	secret := strings.Repeat("cd", secretLen)
	tests := []struct {
		in     string
		kind   store.TokenKind
		wantOK bool
	}{
		{"qk_" + id + "_" + secret, store.TokenAPI, true},
		{"qj_" + id + "_" + secret, store.TokenJoin, true},
		{"  qk_" + id + "_" + secret + "\n", store.TokenAPI, true}, // pasted with blanks
		{"", "", false},
		{"qk", "", false},
		{"qx_" + id + "_" + secret, "", false},
		{"QK_" + id + "_" + secret, "", false},
		{"qk_" + id[:11] + "_" + secret, "", false},
		{"qk_" + id + "_" + secret[:63], "", false},
		{"qk_" + id + "_" + secret + "0", "", false},
		{"qk_" + id + "_" + secret + "_", "", false},
		{"qk__" + id + "_" + secret, "", false},
		{"Bearer qk_" + id + "_" + secret, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			kind, gotID, gotSecret, err := Parse(tt.in)
			if !tt.wantOK {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse(%q) = %q, %q, %q, %v; want ErrInvalid", tt.in, kind, gotID, gotSecret, err)
				}
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q shows the secret", err)
				}
				return
			}
			if err != nil || kind != tt.kind || gotID != id || gotSecret != secret {
				t.Fatalf("Parse(%q) = %q, %q, %q, %v; want %q, %q, %q", tt.in, kind, gotID, gotSecret, err, tt.kind, id, secret)
			}
		})
	}
}

func TestNewRoundTrip(t *testing.T) {
	for _, kind := range []store.TokenKind{store.TokenAPI, store.TokenJoin} {
		t.Run(string(kind), func(t *testing.T) {
			rec, s := New(kind)
			rec2, s2 := New(kind)
			if s == s2 || rec.ID == rec2.ID {
				t.Fatalf("two tokens share a string or id: %q %q", s, s2)
			}
			gotKind, id, secret, err := Parse(s)
			if err != nil {
				t.Fatalf("Parse(New(%s)): %v", kind, err)
			}
			if gotKind != kind || rec.Kind != kind || id != rec.ID {
				t.Fatalf("Parse(%q) = %q, %q; record %q, %q", s, gotKind, id, rec.Kind, rec.ID)
			}
			if !bytes.Equal(hash(secret), rec.SecretHash) {
				t.Fatal("the record's hash is not the hash of the secret handed out")
			}
			if strings.Contains(string(rec.SecretHash), secret) {
				t.Fatal("the record holds the secret")
			}
		})
	}
}
