package server

import (
	"bytes"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

// dashboardRoutes are the dashboard's pages: each, and anything under it,
// is answered with index.html, and the app shows the page (history-mode
// routing). Other paths are not the dashboard's and get a 404.
var dashboardRoutes = []string{"/login", "/images", "/jobs", "/catalog", "/nodes", "/pools", "/tokens", "/audit"}

// contentSecurityPolicy allows the dashboard its own scripts only (no
// inline ones), its own API, and no framing.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// dashboard serves the built dashboard in dist on mux: hashed assets with
// long cache lifetimes, index.html for every page without.
func dashboard(mux *http.ServeMux, dist fs.FS) {
	index, err := fs.ReadFile(dist, "index.html")
	if err != nil {
		index = []byte("<!doctype html><title>Quarry</title><p>This binary was built without the dashboard: run make web, then build again.</p>")
	}
	page := func(w http.ResponseWriter, r *http.Request) {
		secure(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(index))
	}
	mux.HandleFunc("GET /{$}", page)
	for _, route := range dashboardRoutes {
		mux.HandleFunc("GET "+route, page)
		mux.HandleFunc("GET "+route+"/", page)
	}
	files := http.FileServerFS(dist)
	static := func(w http.ResponseWriter, r *http.Request) {
		secure(w.Header())
		if strings.HasPrefix(r.URL.Path, "/assets/") {
			// Their names carry a hash of their content: they never change.
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	}
	mux.HandleFunc("GET /assets/", static)
	// The few files at the bundle's top (an icon), by name.
	entries, _ := fs.ReadDir(dist, ".")
	for _, e := range entries {
		if !e.IsDir() && e.Name() != "index.html" {
			mux.HandleFunc("GET /"+e.Name(), static)
		}
	}
}

// secure sets the headers every dashboard response carries.
func secure(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}
