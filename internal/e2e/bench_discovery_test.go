package e2e

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/store"
)

// TestBenchmarkDiscovery measures ISO discovery and prints the figures with
// a reference taken in the same run. It runs only with QUARRY_BENCH=1
// (make bench-discovery): it writes 100,000 small files.
//
//   - latency: a file completely written → visible through the API, p50 and
//     p95 over 50 files (target p95 ≤ 2 s);
//   - rescan: a full scan of 100 pools × 1,000 files that are already in
//     the library, against `find | xargs stat` of the same tree (target
//     ≤ 3 ×).
func TestBenchmarkDiscovery(t *testing.T) {
	if os.Getenv("QUARRY_BENCH") == "" {
		t.Skip("set QUARRY_BENCH=1 to run (make bench-discovery)")
	}
	pools, files := 100, 1000
	s := quarrytest.StartServer(t, quarrytest.WithScans(time.Hour, -1, 500*time.Millisecond))
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "bench"})
	waitState(t, s, a.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)

	// Latency, on a pool of its own.
	mkdir(t, a.Opts.LocalPath("/srv/latency"))
	lat := createPool(t, s, "latency", "/srv/latency", a.NodeID)
	// A first file shows that the node watches the new pool (the stream
	// opening triggers a scan even if the watch started after the write).
	writeSparseISO(t, filepath.Join(a.Opts.LocalPath("/srv/latency"), "iso", "warmup.iso"), "WARMUP")
	waitImage(t, s, lat, "iso/warmup.iso", quarryv1.ImageState_IMAGE_STATE_READY, 10*time.Second)
	var lats []time.Duration
	for i := range 50 {
		name := fmt.Sprintf("f%02d.iso", i)
		writeSparseISO(t, filepath.Join(a.Opts.LocalPath("/srv/latency"), "iso", name), "LATENCY")
		done := time.Now()
		for {
			if _, ok := images(t, s, lat)["iso/"+name]; ok {
				break
			}
			if time.Since(done) > 10*time.Second {
				t.Fatalf("%s not visible after 10 s", name)
			}
			time.Sleep(2 * time.Millisecond)
		}
		lats = append(lats, time.Since(done))
	}
	slices.Sort(lats)
	p50, p95 := lats[len(lats)/2], lats[len(lats)*95/100]

	// The tree: 100 pools × 1,000 files, registered by a first full scan.
	root := a.Opts.LocalPath("/srv/bench")
	var ids []string
	for p := range pools {
		dir := filepath.Join(root, fmt.Sprintf("p%03d", p))
		mkdir(t, filepath.Join(dir, "iso"))
		for f := range files {
			writeSparseISO(t, filepath.Join(dir, "iso", fmt.Sprintf("f%04d.iso", f)), "BENCH")
		}
		ids = append(ids, createPool(t, s, fmt.Sprintf("p%03d", p), fmt.Sprintf("/srv/bench/p%03d", p), a.NodeID))
	}
	// Event streams opening on the new pools may have scanned some already.
	start := time.Now()
	scanAll(t, s)
	firstScan := time.Since(start)
	all, err := s.Store.ListImages(t.Context(), store.ImageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if want := pools*files + 51; len(all) != want {
		t.Fatalf("%d images after the first full scan; want %d", len(all), want)
	}

	// Reference and rescan, each warm, best of three.
	ref := best(3, func() {
		cmd := exec.Command("sh", "-c", `find "$1" -type f -print0 | xargs -0 stat --format '%s %Y %n' > /dev/null`, "sh", root)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("find | stat: %v\n%s", err, out)
		}
	})
	rescan := best(3, func() {
		if n := scanAll(t, s); n != 0 {
			t.Fatalf("rescan discovered %d files; want 0", n)
		}
	})
	_ = ids
	fmt.Printf("discovery latency over 50 files: p50 %v, p95 %v (target p95 <= 2s)\n", p50.Round(time.Millisecond), p95.Round(time.Millisecond))
	fmt.Printf("first full scan, %d files in %d pools (some registered by event scans before it): %v\n", pools*files, pools, firstScan.Round(time.Millisecond))
	fmt.Printf("rescan of %d pools x %d files: %v; find | xargs stat: %v; ratio %.2f (target <= 3)\n",
		pools, files, rescan.Round(time.Millisecond), ref.Round(time.Millisecond), float64(rescan)/float64(ref))
}

func createPool(t *testing.T, s *quarrytest.Server, name, path, nodeID string) string {
	t.Helper()
	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: name, Path: path, AssignedNodeIds: []string{nodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Msg.GetPool().GetId()
	quarrytest.Eventually(t, 10*time.Second, func() error {
		r, err := s.Pools.GetPool(t.Context(), connect.NewRequest(&quarryv1.GetPoolRequest{Id: id}))
		if err != nil {
			return err
		}
		for _, m := range r.Msg.GetPool().GetNodes() {
			if m.GetMounted() {
				return nil
			}
		}
		return fmt.Errorf("pool %s not mounted yet", name)
	})
	return id
}

func scanAll(t *testing.T, s *quarrytest.Server) int {
	t.Helper()
	resp, err := s.Images.ScanISOs(t.Context(), connect.NewRequest(&quarryv1.ScanISOsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Msg.GetResults() {
		if r.GetSkipped() {
			t.Fatalf("pool %s skipped: %s", r.GetStoragePoolName(), r.GetSkipReason())
		}
	}
	return int(resp.Msg.GetDiscoveredCount())
}

func best(n int, f func()) time.Duration {
	var b time.Duration
	for i := range n {
		start := time.Now()
		f()
		if d := time.Since(start); i == 0 || d < b {
			b = d
		}
	}
	return b
}

// writeSparseISO writes a 40 KiB ISO 9660 image whose only non-zero blocks
// are its two volume descriptors, so 100,000 of them fit in little space.
func writeSparseISO(t *testing.T, path, label string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	desc := make([]byte, 2*2048)
	pvd, term := desc[:2048], desc[2048:]
	pvd[0], pvd[6], term[0], term[6] = 1, 1, 255, 1
	copy(pvd[1:6], "CD001")
	copy(term[1:6], "CD001")
	for i := 40; i < 72; i++ {
		pvd[i] = ' '
	}
	copy(pvd[40:72], label)
	binary.LittleEndian.PutUint32(pvd[80:84], 20)
	binary.LittleEndian.PutUint16(pvd[128:130], 2048)
	if _, err := f.WriteAt(desc, 16*2048); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(20 * 2048); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
