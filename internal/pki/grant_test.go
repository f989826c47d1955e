package pki

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestGrant: a grant signed with the control plane's certificate verifies
// with the CA alone; forged, tampered, expired and future ones are refused.
func TestGrant(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	now := time.Now()
	cp := controlPlaneCert(t, ca, now, time.Hour)
	g := Grant{Source: "node-a", Grantee: "node-b", Job: "job-1", PoolID: "pool-1", PoolPath: "/srv/a",
		Path: "images/x.img", Size: 42, SHA256: strings.Repeat("ab", 32), IssuedAt: now, Expires: now.Add(time.Minute)}
	tok, err := SignGrant(g, cp)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyGrant(tok, ca.Pool(), now)
	if err != nil || got.Source != g.Source || got.Grantee != g.Grantee || got.Path != g.Path || got.Size != 42 || !got.Expires.Equal(g.Expires) {
		t.Fatalf("VerifyGrant = %+v, %v", got, err)
	}
	sign := func(g Grant, signer *CA, at time.Time) string {
		tok, err := SignGrant(g, controlPlaneCert(t, signer, at, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	parts := strings.Split(tok, ".")
	swapped, _ := SignGrant(Grant{Source: "node-a", Grantee: "node-c", Path: "p", SHA256: "x", IssuedAt: now, Expires: now.Add(time.Minute)}, cp)
	node := nodeCert(t, ca, "node-a", now, time.Hour)
	for _, tt := range []struct {
		name, tok, why string
		at             time.Time
	}{
		{"another CA", sign(g, other, now), "not the control plane of this cluster", now},
		{"a node's certificate", func() string { tok, _ := SignGrant(g, node); return tok }(), "not the control plane", now},
		{"payload of another grant", strings.Join([]string{parts[0], strings.Split(swapped, ".")[1], parts[2], parts[3]}, "."), "signature does not match", now},
		{"expired", tok, "expired", now.Add(time.Minute + clockSkew + time.Second)},
		{"issued in the future", func() string {
			f := g
			f.IssuedAt, f.Expires = now.Add(clockSkew+time.Minute), now.Add(clockSkew+2*time.Minute)
			return sign(f, ca, now)
		}(), "future", now},
		{"not a grant", "Bearer abc", "not a Quarry peer grant", now},
		{"bad base64", "qg1.!!.!!.!!", "malformed", now},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyGrant(tt.tok, ca.Pool(), tt.at)
			if !errors.Is(err, ErrGrant) || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("VerifyGrant = %v; want ErrGrant saying %q", err, tt.why)
			}
		})
	}
}
