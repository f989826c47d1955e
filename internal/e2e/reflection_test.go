package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// h2c returns an HTTP client that speaks HTTP/2 without TLS (reflection is
// a bidirectional stream) and sends token, with every request's path passed
// through rewrite.
func h2c(token string, rewrite func(string) string) *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	base := &http.Transport{Protocols: p}
	return &http.Client{Transport: &auth.Transport{Token: token, Base: rewritePath{base, rewrite}}}
}

type rewritePath struct {
	base    http.RoundTripper
	rewrite func(string) string
}

func (r rewritePath) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Path = r.rewrite(req.URL.Path)
	return r.base.RoundTrip(req)
}

// TestReflection asks the control plane for its schema with a gRPC
// reflection client, as grpcurl does: v1, and v1alpha for older tools. It
// lists the public services and describes them; without a token it is
// refused like any call.
func TestReflection(t *testing.T) {
	s := quarrytest.StartServer(t)
	viewer := createToken(t, s, store.RoleViewer, "grpcurl", 0)
	same := func(p string) string { return p }
	// The wire format of v1alpha is v1's: the same client, on the old path.
	alpha := func(p string) string {
		return strings.Replace(p, "/grpc.reflection.v1.", "/grpc.reflection.v1alpha.", 1)
	}
	for _, tc := range []struct {
		name    string
		rewrite func(string) string
	}{{"v1", same}, {"v1alpha", alpha}} {
		t.Run(tc.name, func(t *testing.T) {
			c := grpcreflect.NewClient(h2c(viewer, tc.rewrite), s.URL, connect.WithGRPC())
			stream := c.NewStream(t.Context())
			defer stream.Close()
			names, err := stream.ListServices()
			if err != nil {
				t.Fatalf("listing services: %v", err)
			}
			for _, want := range []protoreflect.FullName{"quarry.v1.NodeService", "quarry.v1.StoragePoolService",
				"quarry.v1.ImageService", "quarry.v1.JobService", "quarry.v1.TokenService", "quarry.v1.AuditService",
				"quarry.v1.EnrollmentService"} {
				if !slices.Contains(names, want) {
					t.Errorf("services %v lack %s", names, want)
				}
			}
			files, err := stream.FileContainingSymbol("quarry.v1.NodeService")
			if err != nil {
				t.Fatalf("describing quarry.v1.NodeService: %v", err)
			}
			var methods []string
			for _, f := range files {
				for _, svc := range f.GetService() {
					if svc.GetName() == "NodeService" {
						for _, m := range svc.GetMethod() {
							methods = append(methods, m.GetName())
						}
					}
				}
			}
			if !slices.Contains(methods, "ListNodes") || !slices.Contains(methods, "RegisterNode") {
				t.Errorf("NodeService methods %v, want ListNodes and RegisterNode", methods)
			}
		})
	}

	t.Run("no token", func(t *testing.T) {
		c := grpcreflect.NewClient(h2c("", same), s.URL, connect.WithGRPC())
		stream := c.NewStream(t.Context())
		defer stream.Close()
		if _, err := stream.ListServices(); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("reflection without a token: %v, want unauthenticated", err)
		}
	})
}
