package tus

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// memBackend keeps uploads in memory, by the Backend contract.
type memBackend struct {
	mu      sync.Mutex
	n       int
	uploads map[string]*memUpload
}

type memUpload struct {
	Upload
	data []byte
}

var errGone = errors.New("no such upload")

func (b *memBackend) Create(_ context.Context, length int64, meta Metadata) (Upload, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	u := &memUpload{Upload: Upload{ID: fmt.Sprintf("u%d", b.n), Length: length, Metadata: meta, Expires: time.Now().Add(time.Hour)}}
	b.uploads[u.ID] = u
	return u.Upload, nil
}

func (b *memBackend) Get(_ context.Context, id string) (Upload, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	u, ok := b.uploads[id]
	if !ok {
		return Upload{}, errGone
	}
	u.Offset = int64(len(u.data))
	return u.Upload, nil
}

func (b *memBackend) Write(ctx context.Context, id string, p Patch) (Upload, error) {
	got, err := io.ReadAll(p.Body)
	b.mu.Lock()
	u, ok := b.uploads[id]
	if !ok {
		b.mu.Unlock()
		return Upload{}, errGone
	}
	if err == nil || !(p.Atomic || errors.Is(err, ErrChecksumMismatch)) {
		u.data = append(u.data, got...)
	}
	b.mu.Unlock()
	if err != nil {
		return Upload{}, err
	}
	return b.Get(ctx, id)
}

func (b *memBackend) Terminate(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.uploads[id]; !ok {
		return errGone
	}
	delete(b.uploads, id)
	return nil
}

func newServer(t *testing.T) (*httptest.Server, *memBackend) {
	b := &memBackend{uploads: map[string]*memUpload{}}
	h := &Handler{Backend: b, Prefix: "/uploads/", MaxSize: 1 << 30, ErrorStatus: func(err error) int {
		if errors.Is(err, errGone) {
			return http.StatusNotFound
		}
		return http.StatusInternalServerError
	}}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s, b
}

func do(t *testing.T, method, url string, body []byte, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", Version)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func create(t *testing.T, s *httptest.Server, length int) string {
	t.Helper()
	resp := do(t, "POST", s.URL+"/uploads/", nil, "Upload-Length", strconv.Itoa(length),
		"Upload-Metadata", "filename "+base64.StdEncoding.EncodeToString([]byte("a.iso"))+",empty")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %s", resp.Status)
	}
	return s.URL + resp.Header.Get("Location")
}

const octet = "application/offset+octet-stream"

func TestDiscovery(t *testing.T) {
	s, _ := newServer(t)
	resp := do(t, "OPTIONS", s.URL+"/uploads/", nil, "Tus-Resumable", "")
	want := map[string]string{"Tus-Version": "1.0.0", "Tus-Extension": Extensions, "Tus-Max-Size": "1073741824",
		"Tus-Checksum-Algorithm": "sha1,sha256", "Tus-Resumable": "1.0.0"}
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("OPTIONS: %s", resp.Status)
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestVersion(t *testing.T) {
	s, _ := newServer(t)
	for _, v := range []string{"", "0.2.2", "2.0.0"} {
		resp := do(t, "POST", s.URL+"/uploads/", nil, "Tus-Resumable", v, "Upload-Length", "1")
		if resp.StatusCode != http.StatusPreconditionFailed || resp.Header.Get("Tus-Version") != Version {
			t.Errorf("Tus-Resumable %q: %s, Tus-Version %q", v, resp.Status, resp.Header.Get("Tus-Version"))
		}
	}
}

func TestCreation(t *testing.T) {
	s, b := newServer(t)
	for _, c := range []struct {
		name   string
		hdr    []string
		status int
	}{
		{"no length", nil, 400},
		{"deferred", []string{"Upload-Defer-Length", "1"}, 400},
		{"negative", []string{"Upload-Length", "-1"}, 400},
		{"not a number", []string{"Upload-Length", "12x"}, 400},
		{"absurd", []string{"Upload-Length", "99999999999999999999"}, 400},
		{"too large", []string{"Upload-Length", strconv.Itoa(1<<30 + 1)}, 413},
		{"bad metadata", []string{"Upload-Length", "1", "Upload-Metadata", "k !!!"}, 400},
		{"duplicate key", []string{"Upload-Length", "1", "Upload-Metadata", "k,k"}, 400},
		{"ok", []string{"Upload-Length", "10"}, 201},
		{"empty", []string{"Upload-Length", "0"}, 201},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := do(t, "POST", s.URL+"/uploads/", nil, c.hdr...)
			if resp.StatusCode != c.status {
				t.Errorf("status %s, want %d", resp.Status, c.status)
			}
		})
	}
	u := create(t, s, 10)
	resp := do(t, "HEAD", u, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Upload-Offset") != "0" || resp.Header.Get("Upload-Length") != "10" ||
		resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Upload-Expires") == "" {
		t.Errorf("HEAD: %s %v", resp.Status, resp.Header)
	}
	if m, _ := ParseMetadata(resp.Header.Get("Upload-Metadata")); m["filename"] != "a.iso" {
		t.Errorf("metadata %v", m)
	}
	id := u[strings.LastIndex(u, "/")+1:]
	if b.uploads[id].Metadata["filename"] != "a.iso" {
		t.Errorf("backend metadata %v", b.uploads[id].Metadata)
	}
}

func TestCreationWithUpload(t *testing.T) {
	s, _ := newServer(t)
	resp := do(t, "POST", s.URL+"/uploads/", []byte("hello"), "Upload-Length", "10", "Content-Type", octet)
	if resp.StatusCode != 201 || resp.Header.Get("Upload-Offset") != "5" {
		t.Fatalf("%s offset %q", resp.Status, resp.Header.Get("Upload-Offset"))
	}
	resp = do(t, "POST", s.URL+"/uploads/", []byte("hello world!"), "Upload-Length", "10", "Content-Type", octet)
	if resp.StatusCode != 413 {
		t.Errorf("body over length: %s", resp.Status)
	}
}

func TestPatch(t *testing.T) {
	s, b := newServer(t)
	u := create(t, s, 10)
	for _, c := range []struct {
		name   string
		body   string
		hdr    []string
		status int
		offset string
	}{
		{"wrong content type", "abc", []string{"Upload-Offset", "0", "Content-Type", "text/plain"}, 415, ""},
		{"no offset", "abc", []string{"Content-Type", octet}, 400, ""},
		{"wrong offset", "abc", []string{"Upload-Offset", "3", "Content-Type", octet}, 409, ""},
		{"first", "abc", []string{"Upload-Offset", "0", "Content-Type", octet}, 204, "3"},
		{"stale offset", "abc", []string{"Upload-Offset", "0", "Content-Type", octet}, 409, ""},
		{"too long", "0123456789", []string{"Upload-Offset", "3", "Content-Type", octet}, 413, ""},
		{"bad checksum", "def", []string{"Upload-Offset", "3", "Content-Type", octet, "Upload-Checksum", "sha1 " + sum1("xyz")}, 460, ""},
		{"unknown algorithm", "def", []string{"Upload-Offset", "3", "Content-Type", octet, "Upload-Checksum", "md5 " + sum1("def")}, 400, ""},
		{"sha1", "def", []string{"Upload-Offset", "3", "Content-Type", octet, "Upload-Checksum", "sha1 " + sum1("def")}, 204, "6"},
		{"sha256", "ghij", []string{"Upload-Offset", "6", "Content-Type", octet, "Upload-Checksum", "sha256 " + sum256("ghij")}, 204, "10"},
		{"full", "k", []string{"Upload-Offset", "10", "Content-Type", octet}, 413, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := do(t, "PATCH", u, []byte(c.body), c.hdr...)
			if resp.StatusCode != c.status {
				t.Errorf("status %s, want %d", resp.Status, c.status)
			}
			if c.offset != "" && resp.Header.Get("Upload-Offset") != c.offset {
				t.Errorf("Upload-Offset %q, want %s", resp.Header.Get("Upload-Offset"), c.offset)
			}
		})
	}
	id := u[strings.LastIndex(u, "/")+1:]
	if got := string(b.uploads[id].data); got != "abcdefghij" {
		t.Errorf("stored %q", got)
	}
}

// A body of unknown length (chunked) that goes past the upload's length is
// refused and nothing of it is kept.
func TestPatchChunkedTooLong(t *testing.T) {
	s, b := newServer(t)
	u := create(t, s, 4)
	req, _ := http.NewRequest("PATCH", u, io.MultiReader(strings.NewReader("abcdef")))
	req.ContentLength = -1
	req.Header.Set("Tus-Resumable", Version)
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", octet)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("status %s", resp.Status)
	}
	id := u[strings.LastIndex(u, "/")+1:]
	if got := len(b.uploads[id].data); got > 4 {
		t.Errorf("kept %d bytes", got)
	}
}

func TestTermination(t *testing.T) {
	s, _ := newServer(t)
	u := create(t, s, 10)
	if resp := do(t, "DELETE", u, nil); resp.StatusCode != 204 {
		t.Fatalf("DELETE: %s", resp.Status)
	}
	if resp := do(t, "HEAD", u, nil); resp.StatusCode != 404 {
		t.Errorf("HEAD after DELETE: %s", resp.Status)
	}
	if resp := do(t, "PATCH", u, []byte("a"), "Upload-Offset", "0", "Content-Type", octet); resp.StatusCode != 404 {
		t.Errorf("PATCH after DELETE: %s", resp.Status)
	}
}

func TestMethodOverride(t *testing.T) {
	s, _ := newServer(t)
	u := create(t, s, 3)
	resp := do(t, "POST", u, []byte("abc"), "X-HTTP-Method-Override", "PATCH", "Upload-Offset", "0", "Content-Type", octet)
	if resp.StatusCode != 204 || resp.Header.Get("Upload-Offset") != "3" {
		t.Errorf("%s %q", resp.Status, resp.Header.Get("Upload-Offset"))
	}
}

func sum1(s string) string {
	h := sha1.Sum([]byte(s))
	return base64.StdEncoding.EncodeToString(h[:])
}

func sum256(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.StdEncoding.EncodeToString(h[:])
}
