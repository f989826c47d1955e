package server

import (
	"bytes"
	"io"
	"net/http"

	"github.com/quarry-project/quarry/internal/api"
)

// SystemClient returns an HTTP client for the public API that the control
// plane's own code (dev mode's setup) calls in process, as "system (name)":
// through the same handlers, policy and audit log as every caller, without
// a token and without a socket. It serves unary calls only.
func (s *Server) SystemClient(name string) *http.Client {
	return &http.Client{Transport: inProcess{handler: s.handler, name: name}}
}

// inProcess serves each request with the server's handler directly.
type inProcess struct {
	handler http.Handler
	name    string
}

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(api.WithSystemCaller(r.Context(), t.name))
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.RequestURI = r.URL.RequestURI()
	if r.Body == nil {
		r.Body = http.NoBody
	}
	w := &bufferedResponse{header: http.Header{}}
	t.handler.ServeHTTP(w, r)
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return &http.Response{
		Status:        http.StatusText(w.code),
		StatusCode:    w.code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.header,
		Body:          io.NopCloser(&w.body),
		ContentLength: int64(w.body.Len()),
		Request:       r,
	}, nil
}

// bufferedResponse keeps a whole response in memory.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *bufferedResponse) Header() http.Header { return w.header }

func (w *bufferedResponse) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *bufferedResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}
