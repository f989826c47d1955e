package bytesize

import "testing"

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in        string
		perSecond bool
		want      int64
		ok        bool
	}{
		{"200MiB/s", true, 200 << 20, true},
		{"200 MiB/s", true, 200 << 20, true},
		{"1.5GiB", false, 3 << 29, true},
		{"64MiB", false, 64 << 20, true},
		{"500MB/s", true, 500e6, true},
		{"100m", true, 100 << 20, true},
		{"4096", false, 4096, true},
		{"0", true, 0, true},
		{"200MiB/s", false, 0, false}, // a rate where a size is wanted
		{"-1M", true, 0, false},
		{"fast", true, 0, false},
		{"", false, 0, false},
		{"1e30GiB", false, 0, false},
	} {
		got, err := Parse(tt.in, tt.perSecond)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Parse(%q, %v) = %d, %v; want %d, ok %v", tt.in, tt.perSecond, got, err, tt.want, tt.ok)
		}
	}
}
