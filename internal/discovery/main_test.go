package discovery

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a test starts through this package must have exited when
// the tests end: each has an owner that waits for it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
