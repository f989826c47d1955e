package server

import (
	"net"
	"strings"
	"testing"
)

func TestPlainHTTPWarning(t *testing.T) {
	for _, tt := range []struct {
		addr              string
		tls, insecure, ok bool
	}{
		{"127.0.0.1:8080", false, false, true},
		{"[::1]:8080", false, false, true},
		{"0.0.0.0:8080", false, false, false},
		{"[::]:8080", false, false, false},
		{"10.0.0.5:8080", false, false, false},
		{"10.0.0.5:8080", true, false, true},
		{"10.0.0.5:8080", false, true, true},
	} {
		addr, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		msg := plainHTTPWarning(addr, tt.tls, tt.insecure)
		if (msg == "") != tt.ok || msg != "" && !strings.Contains(msg, "--insecure-http") {
			t.Errorf("plainHTTPWarning(%s, tls %v, insecure %v) = %q", tt.addr, tt.tls, tt.insecure, msg)
		}
	}
}

func TestTLSFlagsRefused(t *testing.T) {
	for _, cfg := range []Config{
		{TLSAuto: true, TLSCertFile: "c", TLSKeyFile: "k"},
		{TLSCertFile: "c"},
		{TLSKeyFile: "k"},
	} {
		if _, err := tlsCerts(cfg, nil); err == nil {
			t.Errorf("tlsCerts(%+v) accepted", cfg)
		}
	}
}

func TestServerNames(t *testing.T) {
	dns, ips := serverNames("10.1.2.3:8443", []string{"quarry.example", "192.0.2.9"})
	want := map[string]bool{"localhost": true, "quarry.example": true}
	for _, d := range dns {
		delete(want, d)
	}
	if len(want) > 0 {
		t.Errorf("DNS names %v lack %v", dns, want)
	}
	var got []string
	for _, ip := range ips {
		got = append(got, ip.String())
	}
	for _, w := range []string{"127.0.0.1", "::1", "10.1.2.3", "192.0.2.9"} {
		if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
			t.Errorf("addresses %v lack %s", got, w)
		}
	}
}
