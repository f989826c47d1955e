package server

import (
	"html/template"
	"net/http"
)

// homePage is the plain page served at / until the dashboard exists: it says
// what is running and where the API is.
func homePage(version string) http.Handler {
	t := template.Must(template.New("home").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quarry</title></head>
<body>
<h1>Quarry control plane</h1>
<p>Version {{.}}. The dashboard is not built yet; use the CLI (<code>quarry node ls</code>, <code>quarry pool ls</code>)
or the API, for example:</p>
<pre>curl -H 'Content-Type: application/json' -d '{}' $SERVER/quarry.v1.NodeService/ListNodes</pre>
<p><a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a> · <a href="/metrics">/metrics</a></p>
</body></html>
`))
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		t.Execute(w, version)
	})
}
