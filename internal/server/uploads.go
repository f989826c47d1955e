package server

import (
	"context"
	"net/http"

	"github.com/quarry-project/quarry/internal/api"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/tus"
	"github.com/quarry-project/quarry/internal/upload"
)

// uploadsPrefix is where the tus endpoint is served.
const uploadsPrefix = "/uploads/"

// defaultUploadMaxSize is the largest upload accepted (Tus-Max-Size)
// unless Config.UploadMaxSize says otherwise: 4 TiB.
const defaultUploadMaxSize = 4 << 40

func (s *Server) newUploads() *upload.Service {
	return upload.New(upload.Config{
		Store: s.store, Chooser: s.chooser, Agents: s.link,
		Caller: func(ctx context.Context) (upload.Caller, bool) {
			c, ok := api.CallerFrom(ctx)
			return upload.Caller{TokenID: c.TokenID, Admin: c.Role == store.RoleAdmin}, ok
		},
		Expiry: s.cfg.UploadExpiry, PerNode: s.cfg.MaxUploadsPerNode, Global: s.cfg.MaxUploads,
		Logger: s.log,
	})
}

// handleUploads serves the tus endpoint behind the API's authentication:
// role operator; creations and terminations are audited.
func (s *Server) handleUploads(mux *http.ServeMux, guard *api.Auth) {
	maxSize := s.cfg.UploadMaxSize
	if maxSize <= 0 {
		maxSize = defaultUploadMaxSize
	}
	h := &tus.Handler{Backend: s.uploads, Prefix: uploadsPrefix, MaxSize: maxSize, ErrorStatus: upload.Status}
	mux.Handle(uploadsPrefix, guard.GuardHTTP("uploads", store.RoleOperator, []string{http.MethodPost, http.MethodDelete}, h))
}
