// Package web holds the dashboard: its React sources under src/ and, in
// dist/, the bundle `npm run build` makes from them. The bundle is
// committed and embedded, so `go build ./cmd/quarry` alone gives a binary
// whose dashboard works; `make test` rebuilds it and fails when the
// committed bundle is not the one the sources make.
package web

import (
	"embed"
	"io/fs"
)

//go:embed all:dist
var dist embed.FS

// Dist is the built dashboard: index.html and assets/.
func Dist() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embed pattern above guarantees dist exists
	}
	return sub
}
