package qemuimg_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quarry-project/quarry/internal/qemuimg"
	"github.com/quarry-project/quarry/internal/qemuimg/qemutest"
)

func TestCheckPair(t *testing.T) {
	for _, tt := range []struct {
		from, to string
		ok       bool
	}{
		{"qcow2", "raw", true}, {"raw", "qcow2", true}, {"vmdk", "qcow2", true}, {"vhdx", "qcow2", true},
		{"qcow2", "qcow2", false}, {"iso", "qcow2", false}, {"vmdk", "raw", false}, {"", "raw", false}, {"raw", "vmdk", false},
	} {
		err := qemuimg.CheckPair(tt.from, tt.to)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, qemuimg.ErrUnsupported)) {
			t.Errorf("CheckPair(%q, %q) = %v; want ok %v", tt.from, tt.to, err, tt.ok)
		}
	}
}

// TestRoundTrip converts raw → qcow2 → raw with the real qemu-img and
// compares the bytes, the progress and what info and check say.
func TestRoundTrip(t *testing.T) {
	q := qemutest.Require(t)
	if q.Version == "" {
		t.Fatal("no version")
	}
	ctx := context.Background()
	dir := t.TempDir()
	want := bytes.Repeat([]byte("quarry\x00\x01"), 3<<17) // 3 MiB
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	convert := func(from, in, to, out string) []float64 {
		t.Helper()
		f, err := os.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var seen []float64
		if err := q.Convert(ctx, from, f, to, out, func(p float64) { seen = append(seen, p) }); err != nil {
			t.Fatal(err)
		}
		return seen
	}
	progress := convert("raw", src, "qcow2", filepath.Join(dir, "a.qcow2"))
	if len(progress) == 0 || progress[len(progress)-1] != 100 {
		t.Errorf("progress %v; want it to end at 100", progress)
	}
	f, err := os.Open(filepath.Join(dir, "a.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := q.Info(ctx, "qcow2", f)
	f.Close()
	if err != nil || info.Format != "qcow2" || info.VirtualSize != int64(len(want)) || info.SelfContained() != nil {
		t.Errorf("Info = %+v, %v", info, err)
	}
	if sum, err := q.Check(ctx, "qcow2", filepath.Join(dir, "a.qcow2")); err != nil || !strings.Contains(sum, "no errors") {
		t.Errorf("Check = %q, %v", sum, err)
	}
	convert("qcow2", filepath.Join(dir, "a.qcow2"), "raw", filepath.Join(dir, "back.raw"))
	if got, err := os.ReadFile(filepath.Join(dir, "back.raw")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("raw → qcow2 → raw changed the bytes (%v)", err)
	}

	// A qcow2 with a backing file is refused: it would read another file.
	if out, err := exec.Command(q.Path, "create", "-f", "qcow2", "-b", src, "-F", "raw", filepath.Join(dir, "overlay.qcow2")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	f, err = os.Open(filepath.Join(dir, "overlay.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if info, err := q.Info(ctx, "qcow2", f); err != nil || info.SelfContained() == nil {
		t.Errorf("overlay: Info = %+v, %v; want a backing file refused", info, err)
	}

	// A file that is not what it is said to be: qemu-img's own message.
	f2, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := q.Convert(ctx, "qcow2", f2, "raw", filepath.Join(dir, "bad.raw"), nil); err == nil || !strings.Contains(err.Error(), "qemu-img convert") {
		t.Errorf("converting raw bytes read as qcow2: %v; want qemu-img's error", err)
	}
	// A cancelled conversion ends at once with the context's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := q.Convert(cctx, "raw", f2, "qcow2", filepath.Join(dir, "cancelled.qcow2"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Convert = %v", err)
	}

	if _, err := qemuimg.Find(ctx, filepath.Join(dir, "no-qemu-img")); err == nil || !strings.Contains(err.Error(), "qemu-utils") {
		t.Errorf("Find of a missing binary = %v; want the advice to install qemu-utils", err)
	}
}
