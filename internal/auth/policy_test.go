package auth

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/quarry-project/quarry/internal/gen/quarry/v1" // registers the descriptors
	"github.com/quarry-project/quarry/internal/store"
)

// TestPolicyCoversEveryRPC walks every RPC of package quarry.v1: each needs
// a rule, only Enroll may be public, and reads are never audited as changes.
// (internal/e2e checks that the server enforces the rules.)
func TestPolicyCoversEveryRPC(t *testing.T) {
	n := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("quarry.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			s := f.Services().Get(i)
			for j := range s.Methods().Len() {
				m := s.Methods().Get(j)
				proc := "/" + string(s.FullName()) + "/" + string(m.Name())
				n++
				r, ok := RuleFor(proc)
				switch {
				case !ok:
					t.Errorf("%s has no rule in policy.go", proc)
				case r.Public:
					if proc != "/quarry.v1.EnrollmentService/Enroll" && proc != "/quarry.v1.EnrollmentService/Announce" {
						t.Errorf("%s is public; only Enroll, whose join token is its credential, and Announce, which changes nothing, may be", proc)
					}
				case !ValidRole(r.Role):
					t.Errorf("%s needs role %q, which is not a role", proc, r.Role)
				}
				name := string(m.Name())
				// Announce only asks for a health check of a node.
				read := strings.HasPrefix(name, "List") || strings.HasPrefix(name, "Get") || strings.HasPrefix(name, "Watch") || name == "Announce"
				if read == r.Mutates {
					t.Errorf("%s: Mutates is %v; reads are not audited, changes are", proc, r.Mutates)
				}
			}
		}
		return true
	})
	if n == 0 {
		t.Fatal("no quarry.v1 services registered")
	}
}

func TestRuleForUnknown(t *testing.T) {
	for _, proc := range []string{"", "/quarry.v1.NodeService/DropDatabase", "quarry.v1.NodeService/ListNodes", "/grpc.health.v1.Health/Check"} {
		if r, ok := RuleFor(proc); ok {
			t.Errorf("RuleFor(%q) = %+v, want unknown (refused)", proc, r)
		}
	}
}

func TestAllows(t *testing.T) {
	roles := []store.Role{store.RoleViewer, store.RoleOperator, store.RoleAdmin}
	for i, have := range roles {
		for j, need := range roles {
			if got := Allows(have, need); got != (i >= j) {
				t.Errorf("Allows(%s, %s) = %v", have, need, got)
			}
		}
		if Allows("", have) || Allows("root", have) {
			t.Errorf("an unknown role is allowed %s", have)
		}
	}
}
