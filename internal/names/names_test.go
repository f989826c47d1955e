package names

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct{ in, err string }{
		{"n1", ""},
		{"hv-01.rack2", ""},
		{"A_b", ""},
		{"", "empty"},
		{strings.Repeat("a", 64), "limit is 63"},
		{"-a", "must start"},
		{".hidden", "must start"},
		{"a/b", "contains '/'"},
		{"a b", "contains ' '"},
		{"a\x00", "contains"},
		{"é", "must start"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := Check("node", tt.in)
			if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("Check(%q) = %v; want error containing %q", tt.in, err, tt.err)
			}
		})
	}
}

func TestCheckPoolPath(t *testing.T) {
	tests := []struct{ in, err string }{
		{"/srv/isos", ""},
		{"/a", ""},
		{"", "empty"},
		{"srv/isos", "relative"},
		{"./isos", "relative"},
		{"/srv/isos/", "not clean"},
		{"/srv//isos", "not clean"},
		{"/srv/../etc", "not clean"},
		{"/", "root"},
		{"/etc", "system directory /etc"},
		{"/etc/images", "system directory /etc"},
		{"/proc/self", "system directory /proc"},
		{"/sys", "system directory /sys"},
		{"/dev/shm", "system directory /dev"},
		{"/lib64/x", "system directory /lib64"},
		{"/usr/local/images", "system directory /usr"},
		{"/run", "system directory /run"},
		{"/etcetera", ""},
		{"/library/isos", ""},
		{"/srv/etc", ""},
		{"/srv/\nx", "control"},
		{"/" + strings.Repeat("a", 1100), "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := CheckPoolPath(tt.in)
			if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("CheckPoolPath(%q) = %v; want error containing %q", tt.in, err, tt.err)
			}
		})
	}
}

func TestWithin(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"/srv/isos", "/srv/isos", true},
		{"/srv/isos/sub", "/srv/isos", true},
		{"/srv/isos2", "/srv/isos", false},
		{"/srv", "/srv/isos", false},
	} {
		if got := Within(tt.a, tt.b); got != tt.want {
			t.Errorf("Within(%q, %q) = %v; want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func FuzzCheck(f *testing.F) {
	for _, s := range []string{"n1", "a/b", "..", "\x00", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Check("node", s) != nil {
			return
		}
		if strings.ContainsAny(s, "/\\\x00 ") || strings.Contains(s, "..") && s[0] == '.' || len(s) > MaxLen {
			t.Fatalf("Check accepted %q", s)
		}
	})
}

func TestCheckOwnDir(t *testing.T) {
	for _, tt := range []struct {
		p  string
		ok bool
	}{
		{"/var/lib/quarry", false},
		{"/var/lib", false},
		{"/var/lib/quarry/ca", false},
		{"/var/lib/quarry/pools/local", true}, // dev mode's pool
		{"/var/lib/quarry2", true},
		{"/srv/images", true},
	} {
		err := CheckOwnDir(tt.p, "/var/lib/quarry", "the data directory")
		if (err == nil) != tt.ok {
			t.Errorf("CheckOwnDir(%s) = %v, want ok %v", tt.p, err, tt.ok)
		}
	}
}
