package agent

import (
	"strings"
	"testing"
)

func TestPathMapResolve(t *testing.T) {
	binds := []Bind{
		{Path: "/srv/nfs", Dir: "/tmp/shared"},
		{Path: "/srv/nfs/fast", Dir: "/tmp/fast"},
		{Path: "/data/", Dir: "/mnt/data/"}, // cleaned by newPathMap
	}
	tests := []struct {
		name   string
		fsRoot string
		binds  []Bind
		in     string
		want   string
	}{
		{"real filesystem", "", nil, "/srv/isos", "/srv/isos"},
		{"fs root", "/tmp/node-a", nil, "/srv/isos", "/tmp/node-a/srv/isos"},
		{"fs root, root path", "/tmp/node-a", nil, "/", "/tmp/node-a"},
		{"bind exact", "/tmp/node-a", binds, "/srv/nfs", "/tmp/shared"},
		{"bind below", "/tmp/node-a", binds, "/srv/nfs/isos", "/tmp/shared/isos"},
		{"bind deep", "/tmp/node-a", binds, "/srv/nfs/a/b/c", "/tmp/shared/a/b/c"},
		{"longest prefix wins", "/tmp/node-a", binds, "/srv/nfs/fast/isos", "/tmp/fast/isos"},
		{"longest prefix exact", "/tmp/node-a", binds, "/srv/nfs/fast", "/tmp/fast"},
		{"prefix is not a component", "/tmp/node-a", binds, "/srv/nfs/faster", "/tmp/shared/faster"},
		{"component boundary", "/tmp/node-a", binds, "/srv/nfs2", "/tmp/node-a/srv/nfs2"},
		{"component boundary below", "/tmp/node-a", binds, "/srv/nfs2/isos", "/tmp/node-a/srv/nfs2/isos"},
		{"parent of a bind", "/tmp/node-a", binds, "/srv", "/tmp/node-a/srv"},
		{"bind without fs root", "", binds, "/srv/nfs/isos", "/tmp/shared/isos"},
		{"unbound without fs root", "", binds, "/srv/nfs2", "/srv/nfs2"},
		{"cleaned bind", "", binds, "/data/x", "/mnt/data/x"},
		{"root bind", "/tmp/node-a", []Bind{{Path: "/", Dir: "/tmp/all"}}, "/srv/isos", "/tmp/all/srv/isos"},
		{"root bind loses to longer", "", []Bind{{Path: "/", Dir: "/tmp/all"}, {Path: "/srv", Dir: "/tmp/srv"}}, "/srv/isos", "/tmp/srv/isos"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := newPathMap(tt.fsRoot, tt.binds).resolve(tt.in); got != tt.want {
				t.Errorf("resolve(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseBind(t *testing.T) {
	tests := []struct {
		in      string
		want    Bind
		wantErr string
	}{
		{in: "/srv/nfs=/tmp/shared", want: Bind{Path: "/srv/nfs", Dir: "/tmp/shared"}},
		{in: "/srv/nfs/=/tmp//shared/", want: Bind{Path: "/srv/nfs", Dir: "/tmp/shared"}},
		{in: "/srv/a=b=/tmp/x=y", want: Bind{Path: "/srv/a", Dir: "b=/tmp/x=y"}, wantErr: "host directory"},
		{in: "/srv/nfs", wantErr: "want PATH=DIR"},
		{in: "", wantErr: "want PATH=DIR"},
		{in: "=/tmp/shared", wantErr: "want PATH=DIR"},
		{in: "/srv/nfs=", wantErr: "want PATH=DIR"},
		{in: "srv/nfs=/tmp/shared", wantErr: `pool path "srv/nfs" is not absolute`},
		{in: "/srv/nfs=tmp/shared", wantErr: `host directory "tmp/shared" is not absolute`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBind(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseBind(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseBind(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}
