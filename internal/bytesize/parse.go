package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// units by suffix, matched case-insensitively: IEC (KiB…), SI (KB…), and
// single letters (K, M, G, T), which mean IEC units as in curl and wget.
var units = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// Parse reads a byte count such as "64MiB", "1.5 GiB", "500MB", "100M" or
// "4096"; with perSecond, a rate such as "200MiB/s" (the "/s" may be
// left out).
func Parse(s string, perSecond bool) (int64, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	if perSecond {
		v = strings.TrimSpace(strings.TrimSuffix(v, "/s"))
	}
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	n := f * mult
	if err != nil || f < 0 || math.IsNaN(n) || n >= math.MaxInt64 {
		what := "a size such as 64MiB or 1.5GiB"
		if perSecond {
			what = "a rate such as 200MiB/s, or 0 for none"
		}
		return 0, fmt.Errorf("%q is not %s", s, what)
	}
	return int64(n), nil
}
