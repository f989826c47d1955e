package cli

import (
	"bytes"
	"testing"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func TestPrintPlacement(t *testing.T) {
	var b bytes.Buffer
	err := printPlacement(&b, []*quarryv1.PlacementCandidate{
		{NodeName: "n2", Kept: true, Reason: "assigned #2, READY; 0 running jobs, 1.0 GiB free"},
		{NodeName: "n1", Kept: true, Reason: "assigned #1, READY; 2 running jobs, 1.0 GiB free"},
		{NodeId: "node-3", Reason: "not assigned to the pool, and the pool is not shared"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `
Placement (operations try the kept nodes in this order):
RANK     NODE    REASON
1        n2      assigned #2, READY; 0 running jobs, 1.0 GiB free
2        n1      assigned #1, READY; 2 running jobs, 1.0 GiB free
dropped  node-3  not assigned to the pool, and the pool is not shared
`
	if got := b.String(); got != want {
		t.Errorf("printPlacement wrote\n%s\nwant\n%s", got, want)
	}

	b.Reset()
	if err := printPlacement(&b, nil); err != nil || b.Len() != 0 {
		t.Errorf("no candidates: %q, %v; want nothing (an older server)", b.String(), err)
	}
}
