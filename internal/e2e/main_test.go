// Package e2e tests Quarry end to end: real control planes and agents on
// loopback sockets, real SQLite files, the real quarry binary.
package e2e

import (
	"os"
	"testing"

	"github.com/quarry-project/quarry/internal/quarrytest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	quarrytest.CleanupBinary()
	os.Exit(code)
}
