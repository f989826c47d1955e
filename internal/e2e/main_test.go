// Package e2e tests Quarry end to end: real control planes and agents on
// loopback sockets, real SQLite files and PostgreSQL databases, the real
// quarry binary.
package e2e

import (
	"os"
	"testing"

	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m) // runs the tests, then stops PostgreSQL if one started it
	quarrytest.CleanupBinary()
	os.Exit(code)
}
