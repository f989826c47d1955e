// Package bytesize formats byte counts for people, with IEC units: "512 B",
// "3.0 MiB", "1.2 GiB". Every message and table of Quarry uses it, so one
// size reads the same everywhere.
package bytesize

import (
	"fmt"
	"strconv"
)

// Format formats n; negative counts are formatted as they are, in bytes.
func Format(n int64) string {
	if n < 0 {
		return strconv.FormatInt(n, 10) + " B"
	}
	return FormatU(uint64(n))
}

// FormatU formats n.
func FormatU(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10) + " B"
	}
	v := float64(n) / 1024
	i := 0
	// Move up while the value would print as "1024.0" in the current unit.
	for v >= 1024-0.05 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}
