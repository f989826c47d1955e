package bytesize

import "testing"

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{-1, "-1 B"}, {0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{1<<20 - 1, "1.0 MiB"}, {3 << 20, "3.0 MiB"}, {1<<30 + 1<<29, "1.5 GiB"}, {1 << 60, "1.0 EiB"},
	} {
		if got := Format(tc.n); got != tc.want {
			t.Errorf("Format(%d) = %q; want %q", tc.n, got, tc.want)
		}
	}
}
