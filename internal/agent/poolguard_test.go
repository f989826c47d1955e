package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
)

// TestSystemDirectoriesRefused: the agent keeps no pool in a system
// directory, on a pseudo filesystem or in its own data directory, whatever
// the control plane asks: the facts say why and InitPool writes nothing.
func TestSystemDirectoriesRefused(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc", "proc", "usr/lib/x", "srv/ok"} {
		mkdir(t, filepath.Join(root, d))
	}
	dataDir := filepath.Join(root, "state")
	mkdir(t, filepath.Join(dataDir, "pool"))
	// A symlink inside the fs root that leads to the real /etc.
	if err := os.Symlink("/etc", filepath.Join(root, "srv", "link")); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, Config{FSRoot: root, DataDir: dataDir, Binds: []Bind{{Path: "/srv/kernel", Dir: "/proc"}}})
	c := protocols[0].client(t, a)
	tests := []struct {
		path, reason string
	}{
		{"/etc", "pool path /etc is in the system directory /etc; the agent keeps no images there"},
		{"/proc", "pool path /proc is in the system directory /proc"},
		{"/usr/lib/x", "system directory /usr"},
		{"/srv/kernel", "pool path /srv/kernel is served from /proc, in the system directory /proc"},
		{"/srv/link", "pool path /srv/link is served from /etc, in the system directory /etc"},
		{"/state/pool", "overlaps the agent's data directory"},
	}
	for _, tt := range tests {
		f := getFacts(t, c, ref("p", tt.path))[0]
		if f.GetMounted() || f.GetStatus() != agentv1.MountStatus_MOUNT_STATUS_NOT_WRITABLE || !strings.Contains(f.GetReason(), tt.reason) {
			t.Errorf("GetFacts(%s) = mounted %v, %v, %q; want not writable: %q", tt.path, f.GetMounted(), f.GetStatus(), f.GetReason(), tt.reason)
		}
		_, err := initPoolRPC(t, c, ref("p", tt.path))
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("InitPool(%s) = %v, want failed_precondition: %q", tt.path, err, tt.reason)
		}
	}
	for _, d := range []string{"etc/.quarry", "etc/images", "proc/.quarry", "state/pool/.quarry"} {
		if _, err := os.Lstat(filepath.Join(root, d)); err == nil {
			t.Errorf("InitPool created %s under the fs root", d)
		}
	}
	if _, err := initPoolRPC(t, c, ref("ok", "/srv/ok")); err != nil {
		t.Errorf("InitPool(/srv/ok) = %v, want success", err)
	}
}

func TestPseudoFS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("statfs types are Linux's")
	}
	for dir, want := range map[string]string{"/proc": "proc", "/sys": "sysfs", t.TempDir(): ""} {
		if got := pseudoFS(dir); got != want {
			t.Errorf("pseudoFS(%s) = %q, want %q", dir, got, want)
		}
	}
}
