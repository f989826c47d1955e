package api

import (
	"fmt"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                     "/",
		"/images?node=n1":      "/images?node=n1",
		"//evil.example/":      "/",
		"/\\evil.example/":     "/",
		"https://evil.example": "/",
		"images":               "/",
		"/a\r\nSet-Cookie: x":  "/",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOIDCRole(t *testing.T) {
	o, err := NewOIDC(OIDCConfig{Issuer: "https://idp.example", ClientID: "quarry", AdminGroup: "adm", OperatorGroup: "ops", ViewerGroup: "view"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		claim any
		want  store.Role
	}{
		{[]any{"view", "ops"}, store.RoleOperator},
		{[]any{"ops", "adm"}, store.RoleAdmin},
		{"view", store.RoleViewer},
		{[]any{"staff", 3}, ""},
		{nil, ""},
		{map[string]any{"adm": true}, ""},
	} {
		if got := o.role(claimStrings(c.claim)); got != c.want {
			t.Errorf("claim %v: role %q, want %q", c.claim, got, c.want)
		}
	}
	if _, err := NewOIDC(OIDCConfig{Issuer: "https://idp.example", ClientID: "quarry"}); err == nil {
		t.Error("NewOIDC without any group: no error, but nobody could sign in")
	}
}

// TestOIDCPrune: sign-ins sent to the provider that never came back are
// forgotten once expired, by the periodic sweep as well as by the next
// sign-in.
func TestOIDCPrune(t *testing.T) {
	o, err := NewOIDC(OIDCConfig{Issuer: "https://idp.example", ClientID: "quarry", ViewerGroup: "view"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i, ttl := range []time.Duration{time.Minute, oidcLoginTTL} {
		if err := o.remember(fmt.Sprint("state", i), pendingLogin{expires: now.Add(ttl)}, now); err != nil {
			t.Fatal(err)
		}
	}
	o.prune(now.Add(2 * time.Minute))
	if n := len(o.pending); n != 1 {
		t.Fatalf("%d sign-ins pending after the prune, want the 1 not expired", n)
	}
	if _, ok := o.take("state1", now.Add(2*time.Minute)); !ok {
		t.Error("the sign-in that had not expired was pruned")
	}
}
