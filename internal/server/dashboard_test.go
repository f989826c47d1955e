package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

func TestDashboardRoutes(t *testing.T) {
	dist := fstest.MapFS{
		"index.html":            {Data: []byte(`<!doctype html><title>Quarry</title><script type="module" src="/assets/app-1a2b.js"></script>`)},
		"assets/app-1a2b.js":    {Data: []byte(`console.log("app")`)},
		"assets/style-3c4d.css": {Data: []byte(`body{}`)},
		"favicon.svg":           {Data: []byte(`<svg/>`)},
	}
	mux := http.NewServeMux()
	dashboard(mux, dist)
	for _, tc := range []struct {
		path, wantBody, wantCache string
		wantCode                  int
	}{
		{"/", "<title>Quarry</title>", "no-cache", 200},
		{"/images", "<title>Quarry</title>", "no-cache", 200},
		{"/nodes/n1", "<title>Quarry</title>", "no-cache", 200},
		{"/images/img-123", "<title>Quarry</title>", "no-cache", 200},
		{"/login", "<title>Quarry</title>", "no-cache", 200},
		{"/assets/app-1a2b.js", `console.log("app")`, "public, max-age=31536000, immutable", 200},
		{"/favicon.svg", "<svg/>", "no-cache", 200},
		{"/api/v1/nodes", "", "", 404},
		{"/imagesx", "", "", 404},
		{"/assets/missing.js", "", "", 404},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.wantCode {
			t.Errorf("GET %s: %d, want %d", tc.path, rec.Code, tc.wantCode)
			continue
		}
		if tc.wantCode != 200 {
			continue
		}
		if !strings.Contains(rec.Body.String(), tc.wantBody) || rec.Header().Get("Cache-Control") != tc.wantCache {
			t.Errorf("GET %s: Cache-Control %q, body %q", tc.path, rec.Header().Get("Cache-Control"), rec.Body.String())
		}
		h := rec.Header()
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self';") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: security headers %v", tc.path, h)
		}
	}
}
