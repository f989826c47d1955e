package sqlstore

import "testing"

func TestRebindDollar(t *testing.T) {
	tests := []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = $1 AND c = $2"},
		{"UPDATE t SET a = ? WHERE b = '' OR b = ?", "UPDATE t SET a = $1 WHERE b = '' OR b = $2"},
		{"SELECT '?', \"?\" FROM t WHERE a = ?", "SELECT '?', \"?\" FROM t WHERE a = $1"},
		{"SELECT 'it''s ?' WHERE a = ?", "SELECT 'it''s ?' WHERE a = $1"},
		{"-- why?\nSELECT ?", "-- why?\nSELECT $1"},
		{"SELECT 'unterminated ?", "SELECT 'unterminated ?"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := RebindDollar(tt.in); got != tt.want {
				t.Errorf("RebindDollar(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
