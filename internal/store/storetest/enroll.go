package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/store"
)

// testEnroll: an enrollment writes the token's use, the node and its
// certificate together, or nothing at all.
func testEnroll(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	s := open(t)
	j := joinToken("j1")
	j.NodeName = "node-n2"
	mustCreateTokens(t, s, j)
	if got := mustGetToken(t, s, "j1"); got.NodeName != "node-n2" {
		t.Errorf("token node name = %q, want node-n2", got.NodeName)
	}
	if err := s.CreateNode(ctx, node("n1")); err != nil {
		t.Fatal(err)
	}
	cert := store.NodeCertificate{Serial: "0a", KeyHash: "ab12", NotAfter: at(30 * 24 * time.Hour), IssuedAt: at(0)}

	// A new node whose address another node has: nothing is written, and
	// the single-use token is still unused.
	clash := node("n2")
	clash.Address = node("n1").Address
	err := s.Enroll(ctx, store.Enrollment{TokenID: "j1", UsedAt: at(time.Minute), Node: clash, Create: true, Cert: cert})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Enroll with a taken address = %v, want ErrConflict", err)
	}
	if got := mustGetToken(t, s, "j1"); got.UseCount != 0 {
		t.Errorf("after a failed enrollment the token was used %d times, want 0", got.UseCount)
	}
	if _, err := s.GetNode(ctx, "n2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after a failed enrollment GetNode(n2) = %v, want ErrNotFound", err)
	}

	// The same, right: all three written.
	if err := s.Enroll(ctx, store.Enrollment{TokenID: "j1", UsedAt: at(time.Minute), Node: node("n2"), Create: true, Cert: cert}); err != nil {
		t.Fatal(err)
	}
	n, err := s.GetNode(ctx, "n2")
	if err != nil || n.Certificate != cert {
		t.Errorf("enrolled node = %+v, %v; want certificate %+v", n.Certificate, err, cert)
	}
	if got := mustGetToken(t, s, "j1"); got.UseCount != 1 {
		t.Errorf("token used %d times, want 1", got.UseCount)
	}

	// A used single-use token enrolls nothing more.
	mustCreateTokens(t, s, joinToken("j2"))
	if err := s.Enroll(ctx, store.Enrollment{TokenID: "j1", UsedAt: at(time.Hour), Node: node("n3"), Create: true, Cert: cert}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Enroll with a used single-use token = %v, want ErrConflict", err)
	}

	// Replacing the agent of n2: only if its certificate is still the one
	// the enrollment saw.
	moved := node("n2")
	moved.Address = "10.0.9.9:9090"
	next := store.NodeCertificate{Serial: "0b", KeyHash: "cd34", NotAfter: at(31 * 24 * time.Hour), IssuedAt: at(time.Hour)}
	if err := s.Enroll(ctx, store.Enrollment{TokenID: "j2", UsedAt: at(time.Hour), Node: moved, Cert: next, PreviousSerial: "ff"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Enroll over a certificate that changed = %v, want ErrConflict", err)
	}
	if got := mustGetToken(t, s, "j2"); got.UseCount != 0 {
		t.Errorf("token j2 used %d times after a refused replacement, want 0", got.UseCount)
	}
	if err := s.Enroll(ctx, store.Enrollment{TokenID: "j2", UsedAt: at(time.Hour), Node: moved, Cert: next, PreviousSerial: "0a"}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.GetNode(ctx, "n2"); n.Address != moved.Address || n.Certificate != next {
		t.Errorf("replaced node = %s %+v, want %s %+v", n.Address, n.Certificate, moved.Address, next)
	}
}
