package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"strings"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/pki"
)

// controlPlaneTransport is how the CLI reaches the control plane: an
// https:// one must present a certificate from the CA in QUARRY_CA_FILE
// (the control plane's <data-dir>/ca/ca.crt, or GET /ca.crt checked against
// its pin) or from one the system trusts.
func controlPlaneTransport() (http.RoundTripper, error) {
	var roots *x509.CertPool
	if path := os.Getenv("QUARRY_CA_FILE"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, usageErrorf("QUARRY_CA_FILE: %v", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(data) {
			return nil, usageErrorf("QUARRY_CA_FILE %s holds no PEM certificate", path)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = pki.ControlPlaneTLS("", roots)
	return tr, nil
}

// notQuarry is an answer no Quarry control plane gives: --server names some
// other HTTP server (a web server, a proxy, the agent's port).
type notQuarry struct {
	server string // the --server URL
	url    string // the URL that answered
	status int
}

func (e *notQuarry) Error() string {
	return fmt.Sprintf("%s does not look like a Quarry control plane (HTTP %d from %s); check --server or QUARRY_SERVER",
		e.server, e.status, e.url)
}

// Unwrap classes it as unavailable: no control plane was reached.
func (e *notQuarry) Unwrap() error { return errclass.Unavailable }

// checkedTransport refuses responses that are not Connect's: every answer
// of the control plane's API, success or error, is JSON or protobuf, so an
// HTML page or a plain-text "501 Unsupported method" is from something
// else, and saying so beats Connect's "HTTP status 501".
type checkedTransport struct {
	server string
	base   http.RoundTripper
}

func (t checkedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil || connectContentType(resp.Header.Get("Content-Type")) {
		return resp, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	return nil, &notQuarry{server: t.server, url: r.URL.String(), status: resp.StatusCode}
}

// connectContentType reports whether ct is one the Connect protocol
// answers with (unary: application/proto or /json; streams:
// application/connect+proto or +json).
func connectContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "application/proto" || strings.HasPrefix(mt, "application/connect+")
}

// brokenConnections handles the calls that failed on their connection,
// before the control plane answered. One with no side effects (the API's
// Get and List calls) is sent again, once and at once: a kept-alive
// connection that a network cut broke while it was idle (no reset reached
// this host) takes the next request and only then fails, and the retry
// dials a new one. A call that changes something is never sent twice, as
// it may have been carried out; its error says so. Either way the error
// is "unavailable", not the "canceled" Connect makes of a reset.
type brokenConnections struct{}

func (brokenConnections) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err == nil || ctx.Err() != nil || !brokeOff(err) {
			return resp, err
		}
		if req.Spec().IdempotencyLevel == connect.IdempotencyNoSideEffects {
			if resp, err = next(ctx, req); err == nil || ctx.Err() != nil || !brokeOff(err) {
				return resp, err
			}
		}
		cause := errors.Unwrap(err)
		if op, ok := errors.AsType[*net.OpError](err); ok && op.Op != "dial" &&
			req.Spec().IdempotencyLevel != connect.IdempotencyNoSideEffects {
			cause = fmt.Errorf("the connection broke before the answer came, so the change may have been made: look before repeating it: %w", cause)
		}
		return nil, connect.NewError(connect.CodeUnavailable, cause)
	}
}

func (brokenConnections) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (brokenConnections) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// brokeOff says a call failed on its connection, without an answer from
// the control plane. Connect calls a connection reset "canceled" (meaning
// the peer of a handler went away), so that is one too; the caller checks
// that the call's own context is live.
func brokeOff(err error) bool {
	if connect.IsWireError(err) {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeCanceled:
		return true
	}
	return false
}
