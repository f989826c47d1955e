package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDevModeSetupQuiet starts dev mode twice on one data directory. Its
// setup is recorded as the control plane's own ("system (dev mode)"),
// never as the admin; the restart finds everything set up, and neither logs
// nor records an already_exists.
func TestDevModeSetupQuiet(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir)
	devReady(t, d)
	d.stop(t)
	d = startDev(t, dir)
	devReady(t, d)

	var audit []struct{ Actor, Procedure, Result string }
	if err := json.Unmarshal([]byte(mustQuarry(t, d.URL, "audit", "ls", "-o", "json")), &audit); err != nil {
		t.Fatal(err)
	}
	creates := 0
	for _, e := range audit {
		line := e.Actor + " " + e.Procedure + " " + e.Result
		if e.Result != "ok" {
			t.Errorf("audit entry %q: dev setup failed or repeated itself", line)
		}
		switch {
		case strings.HasSuffix(e.Procedure, "/Enroll"):
		case e.Actor != "system (dev mode)":
			t.Errorf("audit entry %q: dev setup recorded as %q, want system (dev mode)", line, e.Actor)
		case strings.HasSuffix(e.Procedure, "/CreatePool"):
			creates++
		}
	}
	if creates != 1 {
		t.Errorf("pool local created %d times, want once: %+v", creates, audit)
	}
	d.stop(t)
	if strings.Contains(d.stderr.String(), "already_exists") {
		t.Errorf("the restarted dev server logged already_exists:\n%s", d.stderr)
	}
}
