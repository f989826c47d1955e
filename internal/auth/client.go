package auth

import "net/http"

// Transport sends every request through Base (http.DefaultTransport when
// nil) with "Authorization: Bearer <Token>"; with no Token it adds nothing.
type Transport struct {
	Token string
	Base  http.RoundTripper
}

func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if t.Token == "" {
		return base.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.Token)
	return base.RoundTrip(r)
}
