package origintest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestContentReadAtIsConsistent(t *testing.T) {
	c := QCOW2(3*blockSize+1234, 10<<30, 7)
	whole := make([]byte, c.Size)
	if n, err := c.ReadAt(whole, 0); n != len(whole) || err != nil {
		t.Fatalf("ReadAt(all) = %d, %v", n, err)
	}
	if !bytes.HasPrefix(whole, []byte("QFI\xfb\x00\x00\x00\x03")) {
		t.Fatalf("no qcow2 v3 header: % x", whole[:8])
	}
	for _, off := range []int64{0, 1, 111, blockSize - 3, blockSize, 2*blockSize + 17, c.Size - 5} {
		p := make([]byte, 100)
		n, err := c.ReadAt(p, off)
		want := whole[off:min(off+100, c.Size)]
		if !bytes.Equal(p[:n], want) {
			t.Errorf("ReadAt(%d) differs from the whole read", off)
		}
		if n < 100 && !errors.Is(err, io.EOF) {
			t.Errorf("short ReadAt(%d) = %d, %v; want io.EOF", off, n, err)
		}
	}
	if bytes.Equal(whole[blockSize:2*blockSize], whole[2*blockSize:3*blockSize]) {
		t.Fatal("blocks repeat")
	}
	other := make([]byte, 64)
	Random(c.Size, 8).ReadAt(other, blockSize)
	if bytes.Equal(other, whole[blockSize:blockSize+64]) {
		t.Fatal("another seed gives the same bytes")
	}
	sum := sha256.Sum256(whole)
	o := New(t)
	if got := o.Add("/a", c).SHA256(); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("SHA256 = %s, want %s", got, hex.EncodeToString(sum[:]))
	}
}

func get(t *testing.T, method, url string, header ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestRangesAndValidators(t *testing.T) {
	o := New(t)
	c := Random(200_000, 1)
	f := o.Add("/img", c)
	whole := make([]byte, c.Size)
	c.ReadAt(whole, 0)

	resp, b, _ := get(t, http.MethodHead, f.URL())
	etag, lm := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	if resp.ContentLength != c.Size || len(b) != 0 || etag == "" || lm == "" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("HEAD: length %d, etag %q, last-modified %q, %d body bytes", resp.ContentLength, etag, lm, len(b))
	}

	for _, tt := range []struct {
		name, ifRange string
		status        int
		from          int64
	}{
		{"plain range", "", 206, 1000},
		{"etag", etag, 206, 1000},
		{"last-modified", lm, 206, 1000},
		{"stale etag", `"old"`, 200, 0},
		{"weak etag", "W/" + etag, 200, 0},
		{"other date", "Mon, 02 Jan 2006 15:04:05 GMT", 200, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := []string{"Range", "bytes=1000-"}
			if tt.ifRange != "" {
				h = append(h, "If-Range", tt.ifRange)
			}
			resp, b, err := get(t, http.MethodGet, f.URL(), h...)
			if err != nil || resp.StatusCode != tt.status || !bytes.Equal(b, whole[tt.from:]) {
				t.Fatalf("status %d (want %d), %d bytes, err %v", resp.StatusCode, tt.status, len(b), err)
			}
		})
	}

	resp, _, _ = get(t, http.MethodGet, f.URL(), "Range", "bytes=200000-")
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != "bytes */200000" {
		t.Fatalf("range past the end: %s, Content-Range %q", resp.Status, resp.Header.Get("Content-Range"))
	}
	f.ChangeETag()
	resp, _, _ = get(t, http.MethodGet, f.URL(), "Range", "bytes=10-", "If-Range", etag)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag {
		t.Fatalf("after ChangeETag: %s, ETag %q", resp.Status, resp.Header.Get("ETag"))
	}
	f.IgnoreRange(true)
	resp, _, _ = get(t, http.MethodGet, f.URL(), "Range", "bytes=10-")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("IgnoreRange: %s", resp.Status)
	}
}

// TestConditionalRequests: current validators get 304 without a body;
// stale ones, and any after the content changed, get the file.
func TestConditionalRequests(t *testing.T) {
	o := New(t)
	f := o.Add("/img", Random(50_000, 2))
	resp, _, _ := get(t, http.MethodHead, f.URL())
	etag, lm := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	for _, tt := range []struct {
		name   string
		h      []string
		status int
	}{
		{"etag", []string{"If-None-Match", etag}, 304},
		{"one of several etags", []string{"If-None-Match", `"old", ` + etag}, 304},
		{"stale etag", []string{"If-None-Match", `"old"`}, 200},
		{"etag wins over date", []string{"If-None-Match", `"old"`, "If-Modified-Since", lm}, 200},
		{"same date", []string{"If-Modified-Since", lm}, 304},
		{"older date", []string{"If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT"}, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, b, err := get(t, http.MethodGet, f.URL(), tt.h...)
			if err != nil || resp.StatusCode != tt.status || (tt.status == 304 && len(b) != 0) || (tt.status == 200 && len(b) != 50_000) {
				t.Fatalf("status %d (want %d), %d bytes, err %v", resp.StatusCode, tt.status, len(b), err)
			}
		})
	}
	if n := f.NotModified(); n != 3 {
		t.Errorf("NotModified = %d, want 3", n)
	}
	o.Add("/img", Random(50_000, 3))
	if resp, _, _ := get(t, http.MethodHead, f.URL(), "If-None-Match", etag, "If-Modified-Since", lm); resp.StatusCode != http.StatusOK {
		t.Errorf("after new content: %s, want 200", resp.Status)
	}
}

func TestFaults(t *testing.T) {
	o := New(t)
	c := Random(300_000, 2)
	f := o.Add("/img", c)

	f.DropAt(100_000, 1)
	_, b, err := get(t, http.MethodGet, f.URL())
	if len(b) != 100_000 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("DropAt: %d bytes, %v", len(b), err)
	}
	if _, b, err = get(t, http.MethodGet, f.URL()); len(b) != 300_000 || err != nil {
		t.Fatalf("after the drop: %d bytes, %v", len(b), err)
	}
	if f.BytesServedOnceIdle(t) != 400_000 || f.Requests() != 2 {
		t.Fatalf("counters: %d bytes, %d requests", f.BytesServed(), f.Requests())
	}

	f.Status(http.StatusTooManyRequests, 1, 2*time.Second)
	resp, _, _ := get(t, http.MethodGet, f.URL())
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("Status: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}

	f.WrongBytes(5)
	_, b, _ = get(t, http.MethodGet, f.URL())
	want := make([]byte, c.Size)
	c.ReadAt(want, 0)
	if b[5] != want[5]^0xff || !bytes.Equal(b[6:], want[6:]) {
		t.Fatal("WrongBytes did not flip exactly byte 5")
	}
	f.Clear()

	f.StallAt(1000, time.Minute)
	client := &http.Client{Timeout: 300 * time.Millisecond}
	resp, err = client.Get(f.URL())
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("StallAt: the body arrived in time")
	}

	f.HideLength(true)
	resp, _, _ = get(t, http.MethodGet, f.URL())
	if resp.ContentLength != -1 {
		t.Fatalf("HideLength: length %d", resp.ContentLength)
	}
	f.Clear()

	f.RateLimit(1 << 20)
	start := time.Now()
	get(t, http.MethodGet, f.URL())
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("300 kB at 1 MiB/s took %v", d)
	}
}

func TestChecksumFile(t *testing.T) {
	o := New(t)
	o.AddChecksumFile("/SHA256SUMS", map[string]string{"b.img": "bb", "a.iso": "aa"})
	_, b, _ := get(t, http.MethodGet, o.URL("/SHA256SUMS"))
	if want := "aa  a.iso\nbb  b.img\n"; string(b) != want {
		t.Fatalf("checksum file %q, want %q", b, want)
	}
	resp, _, _ := get(t, http.MethodGet, o.URL("/missing"))
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("missing path: %s", resp.Status)
	}
	if c := ISO(1<<20, "UBUNTU", 3); !strings.Contains(string(c.Prefix[32768:32774]), "CD001") {
		t.Fatal("ISO has no volume descriptor")
	}
}
