package nodeaddr

import (
	"net"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, want string
		err      string // substring of the error; "" means success
	}{
		{in: "10.0.0.5/24", want: "10.0.0.5:9090"},
		{in: "10.0.0.5", want: "10.0.0.5:9090"},
		{in: " 10.0.0.5:9191 ", want: "10.0.0.5:9191"},
		{in: "node1.example.com", want: "node1.example.com:9090"},
		{in: "Node1:7000", want: "node1:7000"},
		{in: "::1", want: "[::1]:9090"},
		{in: "fd00::5/64", want: "[fd00::5]:9090"},
		{in: "[fd00::5]", want: "[fd00::5]:9090"},
		{in: "[fd00::5]:9191", want: "[fd00::5]:9191"},
		{in: "[fd00::5/64]:9191", want: "[fd00::5]:9191"},
		{in: "FD00:0::5", want: "[fd00::5]:9090"},
		{in: "fe80::1%eth0", want: "[fe80::1%eth0]:9090"},
		{in: "", err: "empty"},
		{in: "http://10.0.0.5", err: "is a URL"},
		{in: "10.0.0.5/33", err: "prefix length"},
		{in: "10.0.0.5:0", err: "1 to 65535"},
		{in: "10.0.0.5:70000", err: "1 to 65535"},
		{in: "10.0.0.5:", err: "1 to 65535"},
		{in: "host:+80", err: "1 to 65535"},
		{in: "fd00::5:9090:x", err: "must be bracketed"},
		{in: "[10.0.0.5]:80", err: "not an IPv6"},
		{in: "[fd00::5", err: "missing ]"},
		{in: "[fd00::5]x", err: "unexpected"},
		{in: "bad host", err: "not allowed"},
		{in: "-bad", err: "starts or ends"},
		{in: "a..b", err: "not a valid host name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Normalize(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Normalize(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// FuzzNormalize checks that whatever is accepted is a dialable host:port and
// that normalizing is idempotent.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"10.0.0.5/24", "[::1]:80", "node1", "fd00::5/64", "a:b:c", "[", "%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s)
		if err != nil {
			return
		}
		if _, _, err := net.SplitHostPort(n); err != nil {
			t.Fatalf("Normalize(%q) = %q, not host:port: %v", s, n, err)
		}
		again, err := Normalize(n)
		if err != nil || again != n {
			t.Fatalf("Normalize(Normalize(%q)) = %q, %v; want %q", s, again, err, n)
		}
	})
}
