package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func TestAges(t *testing.T) {
	now := time.Date(2026, 11, 23, 15, 7, 5, 0, time.UTC)
	tests := []struct {
		name             string
		t                time.Time
		wantAgo, wantSin string
	}{
		{"zero", time.Time{}, "-", "-"},
		{"now", now, "just now", "since 2026-11-23 15:07:05 (just now)"},
		{"seconds", now.Add(-45 * time.Second), "45s ago", "since 2026-11-23 15:06:20 (45s ago)"},
		{"minutes", now.Add(-3*time.Minute - 10*time.Second), "3m ago", "since 2026-11-23 15:03:55 (3m ago)"},
		{"hours", now.Add(-5*time.Hour - 59*time.Minute), "5h ago", "since 2026-11-23 09:08:05 (5h ago)"},
		{"days", now.Add(-50 * time.Hour), "2d ago", "since 2026-11-21 13:07:05 (2d ago)"},
		{"future", now.Add(3 * time.Minute), "in 3m", "since 2026-11-23 15:10:05 (in 3m)"},
		// An expiry 30 days ahead, seen a moment later: not "in 29d".
		{"expiry", now.Add(30*24*time.Hour - 50*time.Millisecond), "in 30d", "since 2026-12-23 15:07:04 (in 30d)"},
		{"expiry hours", now.Add(59*time.Minute + 59*time.Second), "in 1h", "since 2026-11-23 16:07:04 (in 1h)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ago(tt.t, now); got != tt.wantAgo {
				t.Errorf("ago = %q, want %q", got, tt.wantAgo)
			}
			if got := since(tt.t, now); got != tt.wantSin {
				t.Errorf("since = %q, want %q", got, tt.wantSin)
			}
		})
	}
}

func TestEnumWord(t *testing.T) {
	tests := []struct {
		in   quarryv1.NodeState
		want string
	}{
		{quarryv1.NodeState_NODE_STATE_READY, "READY"},
		{quarryv1.NodeState_NODE_STATE_UNREACHABLE, "UNREACHABLE"},
		{quarryv1.NodeState_NODE_STATE_UNKNOWN, "UNKNOWN"},
		{quarryv1.NodeState_NODE_STATE_UNSPECIFIED, "UNSPECIFIED"},
		{quarryv1.NodeState(42), "42"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := enumWord(tt.in); got != tt.want {
				t.Errorf("enumWord(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestScreamingSnake(t *testing.T) {
	for in, want := range map[string]string{
		"NodeState": "NODE_STATE",
		"ImageKind": "IMAGE_KIND",
		"JobState":  "JOB_STATE",
		"V2Thing":   "V2_THING",
	} {
		if got := screamingSnake(in); got != want {
			t.Errorf("screamingSnake(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrintJSON(t *testing.T) {
	var buf bytes.Buffer
	n := &quarryv1.Node{Id: "n1", ManagementAddress: "10.0.0.5:9090", State: quarryv1.NodeState_NODE_STATE_READY}
	if err := printJSON(&buf, &quarryv1.GetNodeResponse{Node: n}); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for _, want := range []string{
		"{\n  \"node\": {\n",
		`"managementAddress": "10.0.0.5:9090"`, // camelCase, like the API
		`"state": "NODE_STATE_READY"`,          // enum names, not numbers
		`"hostname": ""`,                       // zero values present for scripts
		`"pools": []`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}

	buf.Reset()
	if err := printJSONList(&buf, []*quarryv1.Node{n, n}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "[\n  {\n") || strings.Count(buf.String(), `"id": "n1"`) != 2 {
		t.Errorf("list output:\n%s", buf.String())
	}
}

func TestTableCells(t *testing.T) {
	var buf bytes.Buffer
	tb := newTable(&buf, "A", "B")
	tb.row("", "dial tcp:\n\tconnection refused")
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	want := "A  B\n-  dial tcp: connection refused\n"
	if buf.String() != want {
		t.Errorf("table = %q, want %q", buf.String(), want)
	}
}
