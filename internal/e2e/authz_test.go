package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/quarry-project/quarry/internal/auth"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// wantAccess is, for every public RPC, the least role that may call it, or
// "public". It is written out here rather than read from the policy so
// that this test states the contract: an RPC missing here fails the test
// until someone decides who may call it (here and in internal/auth/policy.go).
var wantAccess = map[string]string{
	"/quarry.v1.NodeService/RegisterNode":          "admin",
	"/quarry.v1.NodeService/ListNodes":             "viewer",
	"/quarry.v1.NodeService/GetNode":               "viewer",
	"/quarry.v1.NodeService/UpdateNode":            "admin",
	"/quarry.v1.NodeService/DeleteNode":            "admin",
	"/quarry.v1.NodeService/RevokeNodeCertificate": "admin",

	"/quarry.v1.StoragePoolService/CreatePool": "admin",
	"/quarry.v1.StoragePoolService/ListPools":  "viewer",
	"/quarry.v1.StoragePoolService/GetPool":    "viewer",
	"/quarry.v1.StoragePoolService/UpdatePool": "admin",
	"/quarry.v1.StoragePoolService/DeletePool": "admin",

	"/quarry.v1.TokenService/CreateToken": "admin",
	"/quarry.v1.TokenService/ListTokens":  "admin",
	"/quarry.v1.TokenService/RevokeToken": "admin",

	"/quarry.v1.AuditService/ListAudit": "admin",

	"/quarry.v1.EnrollmentService/Enroll": "public",
	// An agent saying it started: it only makes the control plane check the node.
	"/quarry.v1.EnrollmentService/Announce": "public",

	"/quarry.v1.ImageService/ListCatalog":      "viewer",
	"/quarry.v1.ImageService/ListImages":       "viewer",
	"/quarry.v1.ImageService/GetImage":         "viewer",
	"/quarry.v1.ImageService/DownloadImage":    "operator",
	"/quarry.v1.ImageService/DeleteImage":      "operator",
	"/quarry.v1.ImageService/ScanISOs":         "operator",
	"/quarry.v1.ImageService/VerifyImage":      "operator",
	"/quarry.v1.ImageService/CopyImage":        "operator",
	"/quarry.v1.ImageService/ConvertImage":     "operator",
	"/quarry.v1.EventService/Watch":            "viewer",
	"/quarry.v1.ImageService/GetScanStatus":    "viewer",
	"/quarry.v1.ImageService/GetCatalogStatus": "viewer",
	"/quarry.v1.ImageService/RefreshCatalog":   "operator",
	"/quarry.v1.JobService/ListJobs":           "viewer",
	"/quarry.v1.JobService/GetJob":             "viewer",
	"/quarry.v1.JobService/WatchJob":           "viewer",
	"/quarry.v1.JobService/CancelJob":          "operator",
}

// publicMethods lists every RPC of every service in package quarry.v1, from
// the generated descriptors: a new RPC is in it without anyone adding it.
func publicMethods(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	var out []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("quarry.v1", func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			s := f.Services().Get(i)
			for j := range s.Methods().Len() {
				out = append(out, s.Methods().Get(j))
			}
		}
		return true
	})
	if len(out) < 15 {
		t.Fatalf("found only %d RPCs in quarry.v1; the descriptors are not all registered", len(out))
	}
	return out
}

func procedureOf(m protoreflect.MethodDescriptor) string {
	return "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
}

// callEmpty calls procedure m with an empty request through hc and returns
// the error (nil on success), whatever kind of RPC it is.
func callEmpty(ctx context.Context, t *testing.T, hc *http.Client, base string, m protoreflect.MethodDescriptor) error {
	t.Helper()
	c := connect.NewClient[dynamicpb.Message, dynamicpb.Message](hc, base+procedureOf(m),
		connect.WithSchema(m),
		connect.WithResponseInitializer(func(spec connect.Spec, msg any) error {
			*msg.(*dynamicpb.Message) = *dynamicpb.NewMessage(spec.Schema.(protoreflect.MethodDescriptor).Output())
			return nil
		}))
	req := connect.NewRequest(dynamicpb.NewMessage(m.Input()))
	switch {
	case !m.IsStreamingClient() && !m.IsStreamingServer():
		_, err := c.CallUnary(ctx, req)
		return err
	case m.IsStreamingServer() && !m.IsStreamingClient():
		// Refusals arrive as the stream's error; one message is enough to
		// know the call was let through.
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := c.CallServerStream(ctx, req)
		if err != nil {
			return err
		}
		defer s.Close()
		s.Receive()
		return s.Err()
	}
	t.Fatalf("%s streams from the client; teach callEmpty to call it", procedureOf(m))
	return nil
}

// TestAuthorizationEveryRPC calls every public RPC as every role, with no
// token and with a wrong one: allowed calls may fail for other reasons
// (empty requests are invalid), refused ones fail with exactly
// unauthenticated or permission_denied.
func TestAuthorizationEveryRPC(t *testing.T) {
	// Every wrong token below counts as a failed authentication from
	// 127.0.0.1; the limit is not what this test is about.
	srv := quarrytest.StartServer(t, quarrytest.WithAuthFailures(1_000_000, time.Minute))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	callers := map[string]*http.Client{
		"none":      quarrytest.HTTPClient(""),
		"bad-token": quarrytest.HTTPClient("qk_0123456789ab_" + strings.Repeat("0", 64)),
		"garbage":   quarrytest.HTTPClient("hunter2"),
	}
	roles := []store.Role{store.RoleViewer, store.RoleOperator, store.RoleAdmin}
	for _, r := range roles {
		callers[string(r)] = quarrytest.HTTPClient(createToken(t, srv, r, "authz-"+string(r), 0))
	}

	for _, m := range publicMethods(t) {
		proc := procedureOf(m)
		want, ok := wantAccess[proc]
		if !ok {
			t.Errorf("%s has no expected access in wantAccess: decide who may call it, here and in internal/auth/policy.go", proc)
			continue
		}
		rule, known := auth.RuleFor(proc)
		switch {
		case !known:
			t.Errorf("%s is not in the policy (internal/auth/policy.go), so everyone is refused; want %s", proc, want)
			continue
		case want == "public" && !rule.Public, want != "public" && string(rule.Role) != want:
			t.Errorf("policy for %s: %+v, want %s", proc, rule, want)
		}
		for who, hc := range callers {
			t.Run(strings.TrimPrefix(proc, "/quarry.v1.")+"/"+who, func(t *testing.T) {
				err := callEmpty(ctx, t, hc, srv.URL, m)
				code := connect.CodeOf(err)
				if err == nil {
					code = 0
				}
				switch {
				case connect.CodeOf(err) == connect.CodeUnimplemented:
					t.Skipf("%s is not served yet", proc)
				case want == "public":
					// The request's own credential decides; a bearer token
					// (or none) must not matter.
					if code == connect.CodePermissionDenied || strings.Contains(connectMessage(err), "needs a token") {
						t.Errorf("public %s as %s: %v, want the handler's own answer", proc, who, err)
					}
				case who == "none" || who == "bad-token" || who == "garbage":
					if code != connect.CodeUnauthenticated {
						t.Errorf("%s as %s: %v, want unauthenticated", proc, who, err)
					}
				case auth.Allows(store.Role(who), store.Role(want)):
					if code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied {
						t.Errorf("%s as %s (needs %s): %v, want it let through", proc, who, want, err)
					}
				default:
					if code != connect.CodePermissionDenied {
						t.Errorf("%s as %s (needs %s): %v, want permission_denied", proc, who, want, err)
					} else if msg := connectMessage(err); !strings.Contains(msg, "needs the "+want+" role") {
						t.Errorf("%s as %s: message %q does not say the %s role is needed", proc, who, msg, want)
					}
				}
			})
		}
	}
}

// createToken makes an API token with role through the admin clients and
// returns its secret.
func createToken(t *testing.T, srv *quarrytest.Server, role store.Role, name string, ttl time.Duration) string {
	t.Helper()
	r := map[store.Role]quarryv1.Role{
		store.RoleViewer: quarryv1.Role_ROLE_VIEWER, store.RoleOperator: quarryv1.Role_ROLE_OPERATOR, store.RoleAdmin: quarryv1.Role_ROLE_ADMIN,
	}[role]
	resp, err := srv.Tokens.CreateToken(t.Context(), connect.NewRequest(&quarryv1.CreateTokenRequest{
		Name: name, Kind: quarryv1.TokenKind_TOKEN_KIND_API, Role: r, TtlSeconds: int64(ttl / time.Second),
	}))
	if err != nil {
		t.Fatalf("creating a %s token: %v", role, err)
	}
	if got := resp.Msg.GetToken().GetRole(); got != r {
		t.Fatalf("created token has role %v, want %v", got, r)
	}
	return resp.Msg.GetSecret()
}
