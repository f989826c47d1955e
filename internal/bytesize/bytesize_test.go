package bytesize

import "testing"

func TestFormat(t *testing.T) {
	tests := []struct {
		in   uint64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1288490189, "1.2 GiB"},
		{1<<20 - 1, "1.0 MiB"}, // would round to "1024.0 KiB"
		{5 << 40, "5.0 TiB"},
		{1<<64 - 1, "16.0 EiB"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := Format(tt.in); got != tt.want {
				t.Errorf("Format(%d) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
