package convert

import "testing"

func TestSource(t *testing.T) {
	id, format, ok := parseSource(Source("img-1a2b", "raw"))
	if !ok || id != "img-1a2b" || format != "raw" {
		t.Errorf("parseSource(Source(img-1a2b, raw)) = %q, %q, %v", id, format, ok)
	}
	for _, bad := range []string{"", "verify:img-1", "convert:img-1", "https://example.com/x.img"} {
		if _, _, ok := parseSource(bad); ok {
			t.Errorf("parseSource(%q) ok; want refused", bad)
		}
	}
}
