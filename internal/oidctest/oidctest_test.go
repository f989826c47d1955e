package oidctest

import (
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// TestSignIn goes through the flow a relying party and a browser go
// through: the sign-in page, the choice of a user, the code exchange with
// PKCE and the verified ID token with that user's claims.
func TestSignIn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(ln, []User{
		{Subject: "u-ada", Email: "ada@example.com", Groups: []string{"staff", "admins"}},
		{Subject: "u-nina", Email: "nina@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := t.Context()
	provider, err := oidc.NewProvider(ctx, p.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	const redirect = "http://127.0.0.1:1/callback"
	cfg := &oauth2.Config{ClientID: p.ClientID(), ClientSecret: p.ClientSecret(), Endpoint: provider.Endpoint(),
		RedirectURL: redirect, Scopes: []string{oidc.ScopeOpenID, "email", "groups"}}
	verifier := oauth2.GenerateVerifier()
	start := cfg.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n0nce"))
	browser := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string) (*http.Response, string) {
		t.Helper()
		resp, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	resp, page := get(start)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "ada@example.com (groups staff, admins)") ||
		!strings.Contains(page, "nina@example.com (no groups)") || !strings.Contains(page, `name="state" value="st4te"`) {
		t.Fatalf("the sign-in page: HTTP %d\n%s", resp.StatusCode, page)
	}
	if resp, _ := get(start + "&" + LoginParam + "=u-nobody"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("signing in as an unknown user: HTTP %d, want 400", resp.StatusCode)
	}

	resp, _ = get(start + "&" + LoginParam + "=u-ada")
	back, err := resp.Location()
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(back.String(), redirect) || back.Query().Get("state") != "st4te" {
		t.Fatalf("choosing a user: HTTP %d to %v (%v), want a redirect back with the state", resp.StatusCode, back, err)
	}
	tok, err := cfg.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: p.ClientID()}).Verify(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Email  string   `json:"email"`
		Groups []string `json:"groups"`
	}
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if idt.Subject != "u-ada" || idt.Nonce != "n0nce" || claims.Email != "ada@example.com" || !slices.Equal(claims.Groups, []string{"staff", "admins"}) {
		t.Errorf("ID token of sub %q nonce %q claims %+v, want ada's", idt.Subject, idt.Nonce, claims)
	}
	// The code is used once.
	if _, err := cfg.Exchange(ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier)); err == nil {
		t.Error("a code exchanged twice")
	}
}

func TestParseUser(t *testing.T) {
	u, err := ParseUser("u1:a@example.com:g1, g2")
	if err != nil || u.Subject != "u1" || u.Email != "a@example.com" || !slices.Equal(u.Groups, []string{"g1", "g2"}) {
		t.Errorf("ParseUser = %+v, %v", u, err)
	}
	if u, err := ParseUser("u2:b@example.com:"); err != nil || u.Groups != nil {
		t.Errorf("ParseUser without groups = %+v, %v", u, err)
	}
	for _, bad := range []string{"", "u1", "u1:a@example.com", ":a@example.com:g", "u1::g"} {
		if _, err := ParseUser(bad); err == nil {
			t.Errorf("ParseUser(%q): no error", bad)
		}
	}
}
