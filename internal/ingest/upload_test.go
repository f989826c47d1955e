package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quarry-project/quarry/internal/checksum"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func uploadRequest(p *pool, job string, length int64) UploadRequest {
	return UploadRequest{Job: job, Fence: 1, Root: p.root, Dest: "images/up.raw", Length: length, Describe: "pool test"}
}

// failAfter yields n bytes of data, then fails with err.
type failAfter struct {
	r   io.Reader
	n   int
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestUploadResumeAndFinish(t *testing.T) {
	t.Parallel()
	p := newPool(t, "")
	data := randomBytes(5*mib + 123)
	sum := sha256.Sum256(data)
	want := checksum.Digest{Algo: checksum.SHA256, Hex: hex.EncodeToString(sum[:])}

	u, err := OpenUpload(uploadRequest(p, "job1", int64(len(data))))
	if err != nil {
		t.Fatal(err)
	}
	// A broken connection keeps what arrived.
	broken := errors.New("connection reset")
	off, err := u.Write(0, &failAfter{r: bytes.NewReader(data), n: 2*mib + 7, err: broken}, false)
	if !errors.Is(err, broken) || off != 2*mib+7 {
		t.Fatalf("broken write: offset %d, %v", off, err)
	}
	// A write whose checksum failed is dropped whole.
	off, err = u.Write(off, &failAfter{r: bytes.NewReader(data[off:]), n: mib, err: ErrDropWrite}, false)
	if !errors.Is(err, ErrDropWrite) || off != 2*mib+7 {
		t.Fatalf("dropped write: offset %d, %v", off, err)
	}
	// So is an atomic write that broke.
	off, err = u.Write(off, &failAfter{r: bytes.NewReader(data[off:]), n: mib + 5, err: broken}, true)
	if !errors.Is(err, broken) || off != 2*mib+7 {
		t.Fatalf("atomic write: offset %d, %v", off, err)
	}
	if _, err := u.Write(0, bytes.NewReader(data), false); err == nil {
		t.Fatal("a write at the wrong offset was accepted")
	}
	u.Close()

	// Another process goes on from the checkpoint.
	u, err = OpenUpload(uploadRequest(p, "job1", int64(len(data))))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if u.Offset() != 2*mib+7 || !u.Resumed() {
		t.Fatalf("reopened at %d (resumed %v)", u.Offset(), u.Resumed())
	}
	if off, err = u.Write(u.Offset(), bytes.NewReader(data[u.Offset():]), true); err != nil || off != int64(len(data)) {
		t.Fatalf("last write: %d, %v", off, err)
	}
	res, err := u.Finish(want)
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != want.Hex || res.Size != int64(len(data)) || res.Dest != "images/up.raw" {
		t.Fatalf("result %+v", res)
	}
	got, _ := os.ReadFile(filepath.Join(p.dir, "images/up.raw"))
	if !bytes.Equal(got, data) {
		t.Fatal("the file in place differs from what was sent")
	}
	if left, _ := os.ReadDir(filepath.Join(p.dir, ".quarry/partial")); len(left) != 0 {
		t.Fatalf("left in partial/: %v", left)
	}
}

func TestUploadChecksumMismatch(t *testing.T) {
	t.Parallel()
	p := newPool(t, "")
	data := randomBytes(mib)
	u, err := OpenUpload(uploadRequest(p, "job2", int64(len(data))))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write(0, bytes.NewReader(data), false); err != nil {
		t.Fatal(err)
	}
	wrong := checksum.Digest{Algo: checksum.SHA256, Hex: strings.Repeat("ab", 32)}
	_, err = u.Finish(wrong)
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), wrong.Hex) {
		t.Fatalf("error %v", err)
	}
	sum := sha256.Sum256(data)
	if !strings.Contains(err.Error(), hex.EncodeToString(sum[:])) {
		t.Errorf("the error does not name the digest of the bytes: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(p.dir, ".quarry/partial")); len(left) != 0 {
		t.Fatalf("left in partial/: %v", left)
	}
}

func TestUploadFenced(t *testing.T) {
	t.Parallel()
	p := newPool(t, "")
	r := uploadRequest(p, "job3", 10)
	r.Fence = 2
	u, err := OpenUpload(r)
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	r.Fence = 1
	if _, err := OpenUpload(r); !errors.Is(err, ErrFenced) {
		t.Fatalf("a lower fence opened the upload: %v", err)
	}
}
