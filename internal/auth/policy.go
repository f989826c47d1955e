package auth

import (
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/store"
)

// Rule is what calling one public procedure takes.
type Rule struct {
	// Role is the least role allowed to call the procedure; empty for a
	// public procedure.
	Role store.Role
	// Public procedures need no bearer token: the request carries its own
	// credential (Enroll's join token).
	Public bool
	// Mutates marks procedures that change state: every call of one,
	// allowed or refused, goes into the audit log.
	Mutates bool
}

var (
	read    = Rule{Role: store.RoleViewer}
	operate = Rule{Role: store.RoleOperator, Mutates: true}
	admin   = Rule{Role: store.RoleAdmin, Mutates: true}
	// adminRead is for reads only an admin may see (tokens, the audit log).
	adminRead = Rule{Role: store.RoleAdmin}
)

// policy is the one table of who may call what. A procedure missing here
// is refused to everyone; the end-to-end authorization test walks every
// generated service and fails for a procedure without an entry.
var policy = map[string]Rule{
	quarryv1connect.NodeServiceRegisterNodeProcedure:          admin,
	quarryv1connect.NodeServiceListNodesProcedure:             read,
	quarryv1connect.NodeServiceGetNodeProcedure:               read,
	quarryv1connect.NodeServiceUpdateNodeProcedure:            admin,
	quarryv1connect.NodeServiceDeleteNodeProcedure:            admin,
	quarryv1connect.NodeServiceRevokeNodeCertificateProcedure: admin,

	quarryv1connect.StoragePoolServiceCreatePoolProcedure: admin,
	quarryv1connect.StoragePoolServiceListPoolsProcedure:  read,
	quarryv1connect.StoragePoolServiceGetPoolProcedure:    read,
	quarryv1connect.StoragePoolServiceUpdatePoolProcedure: admin,
	quarryv1connect.StoragePoolServiceDeletePoolProcedure: admin,

	quarryv1connect.TokenServiceCreateTokenProcedure: admin,
	quarryv1connect.TokenServiceListTokensProcedure:  adminRead,
	quarryv1connect.TokenServiceRevokeTokenProcedure: admin,

	quarryv1connect.AuditServiceListAuditProcedure: adminRead,

	// The dashboard's live stream: every role, each hearing what it may
	// read (api.EventService filters).
	quarryv1connect.EventServiceWatchProcedure: read,

	quarryv1connect.EnrollmentServiceEnrollProcedure: {Public: true, Mutates: true},
	// An agent saying it started: no credential and no change, only a
	// health check of the node, which the link bounds.
	quarryv1connect.EnrollmentServiceAnnounceProcedure: {Public: true},

	// Images, scans and jobs: the API contract in DESIGN.md. Listed before
	// their services exist so that they are guarded from the first commit
	// that serves them.
	"/quarry.v1.ImageService/ListCatalog":      read,
	"/quarry.v1.ImageService/ListImages":       read,
	"/quarry.v1.ImageService/GetImage":         read,
	"/quarry.v1.ImageService/DownloadImage":    operate,
	"/quarry.v1.ImageService/DeleteImage":      operate,
	"/quarry.v1.ImageService/ScanISOs":         operate,
	"/quarry.v1.ImageService/VerifyImage":      operate,
	"/quarry.v1.ImageService/CopyImage":        operate,
	"/quarry.v1.ImageService/ConvertImage":     operate,
	"/quarry.v1.ImageService/GetScanStatus":    read,
	"/quarry.v1.ImageService/GetCatalogStatus": read,
	"/quarry.v1.ImageService/RefreshCatalog":   operate,
	"/quarry.v1.JobService/ListJobs":           read,
	"/quarry.v1.JobService/GetJob":             read,
	"/quarry.v1.JobService/WatchJob":           read,
	"/quarry.v1.JobService/CancelJob":          operate,

	// gRPC server reflection (grpcurl, buf curl): the public API's schema,
	// which is no secret, but like every call it needs a token.
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      read,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": read,
}

// RuleFor returns the rule for procedure ("/quarry.v1.NodeService/GetNode").
// ok is false for a procedure the policy does not know, which must be
// refused.
func RuleFor(procedure string) (r Rule, ok bool) {
	r, ok = policy[procedure]
	return r, ok
}
