package server

import (
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/api"
	"github.com/quarry-project/quarry/internal/httpguard"
)

// The defaults of what the listener expects of clients (Config).
const (
	defaultBodyIdle          = 20 * time.Second
	defaultBodyMinRate       = 1024 // bytes a second
	defaultMaxConnsPerClient = 64
)

// front is what every request passes before the routes: the client's
// address and scheme taken from trusted proxies' headers, a deadline on its
// body, and authentication from its headers before the body is read.
func (s *Server) front(guard *api.Auth, routes http.Handler, opts []connect.HandlerOption) http.Handler {
	h := guard.Front(routes, opts...)
	h = httpguard.BodyRate{Idle: s.cfg.BodyIdle, MinRate: s.cfg.BodyMinRate}.Wrap(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, s.proxies.WithClient(api.Arrived(r)))
	})
}
