package checksum

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, returns only well-formed
// entries, and that every entry it returns can be found again and survives
// a round trip through the BSD layout. Seeds are in testdata/fuzz/FuzzParse
// (real-looking Ubuntu, Fedora, Debian, Rocky … files).
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := Parse(bytes.NewReader(data), 64<<10)
		if err != nil {
			if entries != nil {
				t.Fatalf("Parse returned entries with error %v", err)
			}
			return
		}
		if len(entries) == 0 {
			t.Fatal("Parse returned no entries and no error")
		}
		var round strings.Builder
		for _, e := range entries {
			if n, ok := hexLen[e.Algo]; !ok || len(e.Hex) != n {
				t.Fatalf("entry %+v: bad algorithm or digest length", e)
			}
			if strings.Trim(e.Hex, "0123456789abcdef") != "" {
				t.Fatalf("entry %+v: digest is not lower-case hex", e)
			}
			if strings.HasPrefix(e.Name, "./") {
				t.Fatalf("entry %+v: name keeps its ./", e)
			}
			if _, err := Find(entries, e.Name); err != nil && e.Name != "" {
				if !strings.Contains(err.Error(), "different") {
					t.Fatalf("Find(%q) on its own entries: %v", e.Name, err)
				}
			}
			if roundTrips(e) {
				round.WriteString(strings.ToUpper(e.Algo) + " (" + e.Name + ") = " + e.Hex + "\n")
			}
		}
		if round.Len() == 0 || round.Len() > 64<<10 {
			return
		}
		again, err := Parse(strings.NewReader(round.String()), 64<<10)
		if err != nil {
			t.Fatalf("re-parsing %q: %v", round.String(), err)
		}
		i := 0
		for _, e := range entries {
			if !roundTrips(e) {
				continue
			}
			if again[i] != e {
				t.Fatalf("round trip: %+v became %+v", e, again[i])
			}
			i++
		}
	})
}

// roundTrips says whether e fits on one BSD-layout line.
func roundTrips(e Entry) bool {
	return !strings.Contains(e.Name, "\n") && len(e.Name)+len(e.Hex)+20 <= MaxLineLen
}
