package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/checksum"
)

func copyRequest(t *testing.T, src, dst *pool, data []byte) CopyRequest {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(src.dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src.dir, "images/src.img"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return CopyRequest{Job: "job-c", Fence: 1, Src: src.root, SrcPath: "images/src.img", Source: "local:a/images/src.img",
		Root: dst.root, Dest: "images/copy.img", Expected: checksum.Digest{Algo: checksum.SHA256, Hex: hex.EncodeToString(sum[:])},
		Describe: "pool b on node n1", Chunk: 1 << 20, CheckpointEvery: time.Nanosecond}
}

// TestCopy: a local copy lands verified, with the method it used; one cut
// short resumes from its checkpoint; a source whose bytes differ from the
// expected digest fails terminally and leaves nothing behind.
func TestCopy(t *testing.T) {
	const chunk = 1 << 20
	data := randomBytes(3*chunk/2 + 12345)
	src, dst := newPool(t, ""), newPool(t, "")
	r := copyRequest(t, src, dst, data)
	method := ""

	t.Run("whole", func(t *testing.T) {
		res, err := Copy(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		if res.Size != int64(len(data)) || res.SHA256 != r.Expected.Hex || res.Method == "" || res.Resumed {
			t.Fatalf("Copy = %+v", res)
		}
		t.Logf("method %s", res.Method)
		method = res.Method
		got, _ := os.ReadFile(filepath.Join(dst.dir, "images/copy.img"))
		if sha256.Sum256(got) != sha256.Sum256(data) {
			t.Fatal("the copy differs")
		}
		dst.checkNoPartial(t)
		os.Remove(filepath.Join(dst.dir, "images/copy.img"))
	})

	t.Run("resumed", func(t *testing.T) {
		// A first call stopped after its first chunk (cancelled from the
		// progress callback) keeps a checkpoint; the next resumes.
		ctx, cancel := context.WithCancel(t.Context())
		first := r
		first.Progress = func(p Progress) {
			if p.Phase == PhaseDownloading && p.Done >= chunk {
				cancel()
			}
		}
		_, err := Copy(ctx, first)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("first call: %v; want it cancelled", err)
		}
		res, err := Copy(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		// A reflink shares every extent in the first call: nothing to resume.
		if method != MethodReflink && (!res.Resumed || res.FetchedBytes != int64(len(data))-chunk) {
			t.Fatalf("second call %+v; want it resumed after %d bytes", res, chunk)
		}
		dst.checkNoPartial(t)
		os.Remove(filepath.Join(dst.dir, "images/copy.img"))
	})

	t.Run("mismatch", func(t *testing.T) {
		bad := r
		bad.Expected.Hex = strings.Repeat("0", 64)
		_, err := Copy(t.Context(), bad)
		if !errors.Is(err, ErrChecksum) || !errors.Is(err, ErrTerminal) {
			t.Fatalf("Copy = %v; want a terminal checksum mismatch", err)
		}
		dst.checkNoPartial(t)
		dst.checkNoImages(t)
	})
}
