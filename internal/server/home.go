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
or the API. Every call needs a token: the first admin token is in <code>&lt;data-dir&gt;/admin.token</code>
on the server's host; <code>quarry token create</code> makes more. For example:</p>
<pre>export QUARRY_TOKEN=$(cat &lt;data-dir&gt;/admin.token)
curl -H 'Content-Type: application/json' -H "Authorization: Bearer $QUARRY_TOKEN" \
  -d '{}' $SERVER/quarry.v1.NodeService/ListNodes</pre>
<p><a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a> · <a href="/metrics">/metrics</a></p>
</body></html>
`))
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		t.Execute(w, version)
	})
}
