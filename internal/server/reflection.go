package server

import (
	"net/http"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"

	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
)

// publicServices are the services reflection lists: the public API only.
// The agent API is served by the agents, not here.
var publicServices = []string{
	quarryv1connect.NodeServiceName,
	quarryv1connect.StoragePoolServiceName,
	quarryv1connect.ImageServiceName,
	quarryv1connect.JobServiceName,
	quarryv1connect.TokenServiceName,
	quarryv1connect.AuditServiceName,
	quarryv1connect.EnrollmentServiceName,
}

// handleReflection serves gRPC server reflection, v1 and the v1alpha that
// older grpcurl versions ask for, so that grpcurl and buf curl work without
// the .proto files. It goes through opts like every handler: it needs a
// token (auth.RuleFor lists it as a read) and is counted and logged.
func handleReflection(mux *http.ServeMux, opts []connect.HandlerOption) {
	r := grpcreflect.NewStaticReflector(publicServices...)
	mux.Handle(grpcreflect.NewHandlerV1(r, opts...))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(r, opts...))
}
