// Package bytesize formats byte counts for people, the same way wherever
// Quarry shows one: the CLI's tables and the reasons the control plane
// writes for nodes and jobs; and parses the sizes and rates flags take.
package bytesize

import (
	"fmt"
	"strconv"
)

// Format writes n with IEC units and one decimal: "512 B", "1.2 GiB".
func Format(n uint64) string {
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
