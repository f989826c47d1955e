package httpguard

import (
	"crypto/tls"
	"net/http"
	"testing"
)

func TestClient(t *testing.T) {
	p, err := ParseProxies([]string{"10.0.0.0/8", "192.0.2.1,2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, remote string
		tls          bool
		h            http.Header
		addr         string
		https        bool
	}{
		{"untrusted peer", "198.51.100.1:5000", false, http.Header{"X-Forwarded-For": {"203.0.113.5"}, "X-Forwarded-Proto": {"https"}}, "198.51.100.1:5000", false},
		{"untrusted over tls", "198.51.100.1:5000", true, nil, "198.51.100.1:5000", true},
		{"trusted, no header", "10.1.1.1:5000", false, nil, "10.1.1.1:5000", false},
		{"xff", "10.1.1.1:5000", false, http.Header{"X-Forwarded-For": {"203.0.113.5"}}, "203.0.113.5:0", false},
		{"xff skips trusted hops", "10.1.1.1:5000", false, http.Header{"X-Forwarded-For": {"203.0.113.5, 10.2.2.2", "192.0.2.1"}}, "203.0.113.5:0", false},
		{"xff forged prefix", "10.1.1.1:5000", false, http.Header{"X-Forwarded-For": {"1.2.3.4, 203.0.113.5"}}, "203.0.113.5:0", false},
		{"xff all trusted", "10.1.1.1:5000", false, http.Header{"X-Forwarded-For": {"10.3.3.3"}}, "10.3.3.3:0", false},
		{"xff proto", "10.1.1.1:5000", false, http.Header{"X-Forwarded-For": {"203.0.113.5"}, "X-Forwarded-Proto": {"https"}}, "203.0.113.5:0", true},
		{"proto only", "10.1.1.1:5000", false, http.Header{"X-Forwarded-Proto": {"https"}}, "10.1.1.1:5000", true},
		{"forwarded v6", "[2001:db8::5]:443", false, http.Header{"Forwarded": {`for="[2001:db9::1]:4711";proto=https`}}, "[2001:db9::1]:4711", true},
		{"forwarded chain", "10.1.1.1:5000", false, http.Header{"Forwarded": {"for=203.0.113.5;proto=https, for=10.2.2.2;proto=http"}}, "203.0.113.5:0", true},
		{"forwarded wins over xff", "10.1.1.1:5000", false, http.Header{"Forwarded": {"for=203.0.113.5"}, "X-Forwarded-For": {"203.0.113.6"}}, "203.0.113.5:0", false},
		{"forwarded unknown", "10.1.1.1:5000", false, http.Header{"Forwarded": {"for=unknown"}}, "10.1.1.1:5000", false},
		{"garbage", "10.1.1.1:5000", false, http.Header{"X-Forwarded-For": {"<script>"}}, "10.1.1.1:5000", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.remote, Header: tt.h}
			if tt.h == nil {
				r.Header = http.Header{}
			}
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			addr, https := p.Client(r)
			if addr != tt.addr || https != tt.https {
				t.Errorf("Client = %s, https %v; want %s, %v", addr, https, tt.addr, tt.https)
			}
		})
	}
	if _, err := ParseProxies([]string{"proxy.example"}); err == nil {
		t.Error("ParseProxies accepted a host name")
	}
}
