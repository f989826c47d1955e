package store

import (
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	d := Dialect{Name: "test", SerialPrimaryKey: "SERIAL KEY"}
	tests := []struct {
		name, in, want, err string
		d                   Dialect
	}{
		{name: "no placeholders", in: "CREATE TABLE t (id TEXT)", want: "CREATE TABLE t (id TEXT)", d: d},
		{name: "serial_pk", in: "CREATE TABLE t (id {{serial_pk}}, x {{ serial_pk }})",
			want: "CREATE TABLE t (id SERIAL KEY, x SERIAL KEY)", d: d},
		{name: "unknown", in: "CREATE TABLE t (id {{uuid_pk}})", err: "unknown placeholder {{uuid_pk}}", d: d},
		{name: "dialect lacks it", in: "CREATE TABLE t (id {{serial_pk}})", err: "test dialect does not define it",
			d: Dialect{Name: "test"}},
		{name: "single braces are left alone", in: "SELECT '{x}'", want: "SELECT '{x}'", d: d},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := expand(tt.in, tt.d)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("expand(%q) = %q, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestEmbeddedMigrationsExpand checks every shipped file against the
// placeholders a complete dialect defines, so a typo fails here rather than
// at a user's first start.
func TestEmbeddedMigrationsExpand(t *testing.T) {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	d := Dialect{Name: "complete", SerialPrimaryKey: "X"}
	for _, m := range ms {
		out, err := expand(m.sql, d)
		if err != nil {
			t.Errorf("%s: %v", m.name, err)
		}
		if strings.Contains(out, "{{") {
			t.Errorf("%s: braces left after expansion", m.name)
		}
	}
}
