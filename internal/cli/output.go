package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/quarry-project/quarry/internal/bytesize"
)

// wantJSON reports whether the user asked for machine-readable output.
func (g *globals) wantJSON() bool { return g.output == "json" }

// jsonOptions match the JSON the API itself speaks (camelCase names, enum
// names), and emit zero values so scripts can rely on every field existing.
var jsonOptions = protojson.MarshalOptions{EmitUnpopulated: true}

// printJSON writes m as indented JSON.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

// printJSONList writes ms as one indented JSON array.
func printJSONList[T proto.Message](w io.Writer, ms []T) error {
	raw := make([]json.RawMessage, len(ms))
	for i, m := range ms {
		b, err := jsonOptions.Marshal(m)
		if err != nil {
			return err
		}
		raw[i] = b
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	return writeIndented(w, b)
}

// writeIndented re-indents with encoding/json rather than protojson's
// Multiline, which deliberately randomizes whitespace; scripts and tests
// should get the same bytes every time.
func writeIndented(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}

// table aligns rows in columns; call flush when done.
type table struct{ tw *tabwriter.Writer }

// newTable starts a table; with no header it lays out "Key:\tvalue" pairs.
func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

// row adds one line. Empty cells print as "-" so columns never collapse, and
// tabs or newlines inside a cell (error messages) cannot break the layout.
func (t *table) row(cells ...string) {
	for i, c := range cells {
		c = strings.Join(strings.Fields(c), " ")
		if c == "" {
			c = "-"
		}
		cells[i] = c
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// sizeIf formats n, or "-" when the size is not known.
func sizeIf(known bool, n uint64) string {
	if !known {
		return "-"
	}
	return bytesize.Format(n)
}

// shortDuration rounds d down to its largest unit: "45s", "3m", "5h", "2d".
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// roundToUnit rounds d to the nearest whole unit shortDuration shows.
func roundToUnit(d time.Duration) time.Duration {
	unit := time.Second
	switch {
	case d >= 24*time.Hour:
		unit = 24 * time.Hour
	case d >= time.Hour:
		unit = time.Hour
	case d >= time.Minute:
		unit = time.Minute
	}
	return d.Round(unit)
}

// ago says how long before now t was: "3m ago"; "-" for a zero time.
// Times ahead of now (an expiry, or clock skew between hosts) read "in 3m",
// rounded to the nearest unit: a token made a moment ago with a lifetime of
// 30d expires "in 30d", not "in 29d".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in " + shortDuration(roundToUnit(-d))
	case d < time.Second:
		return "just now"
	}
	return shortDuration(d) + " ago"
}

// stamp is an absolute time with its age: "2026-11-23 15:04:05 (3m ago)".
func stamp(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.DateTime) + " (" + ago(t, now) + ")"
}

// since is stamp for the start of a state: "since 2026-11-23 15:04:05 (3m ago)".
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return "since " + stamp(t, now)
}

// localTime converts an API timestamp for display; unset is the zero time.
func localTime(ts *timestamppb.Timestamp) time.Time {
	if ts.GetSeconds() == 0 && ts.GetNanos() == 0 {
		return time.Time{}
	}
	return ts.AsTime().Local()
}

// enumWord drops the type prefix from an enum value name, as people say it:
// NODE_STATE_READY → READY. A number this client does not know (a newer
// server) prints as the number.
func enumWord(e protoreflect.Enum) string {
	v := e.Descriptor().Values().ByNumber(e.Number())
	if v == nil {
		return strconv.Itoa(int(e.Number()))
	}
	prefix := screamingSnake(string(e.Descriptor().Name())) + "_"
	return strings.TrimPrefix(string(v.Name()), prefix)
}

// screamingSnake turns a Go/proto type name into its enum value prefix:
// NodeState → NODE_STATE.
func screamingSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			prev := s[i-1]
			if prev >= 'a' && prev <= 'z' || prev >= '0' && prev <= '9' {
				b.WriteByte('_')
			}
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// truncate shortens s for a table cell; the full text is in show and JSON.
func truncate(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
