// Package tus serves the tus 1.0 resumable-upload protocol
// (https://tus.io/protocols/resumable-upload): core, creation,
// creation-with-upload, termination, checksum and expiration. It knows
// nothing of where the bytes go: a Backend creates uploads, reports their
// offset, takes each PATCH body as a stream and terminates them.
//
// The contract:
//   - Every request but OPTIONS must carry Tus-Resumable: 1.0.0 (412
//     otherwise, with Tus-Version). OPTIONS answers the discovery headers.
//   - Creation needs Upload-Length, 0 ≤ length ≤ MaxSize; a deferred length
//     is refused (400) with a message that says so. Upload-Metadata is
//     parsed (keys unique, values base64) and handed to the backend as is.
//   - PATCH needs Content-Type: application/offset+octet-stream (415) and
//     an Upload-Offset equal to the upload's offset (409). A body longer
//     than what is left of Upload-Length is refused (413): at once when
//     Content-Length says so, else once the excess arrives, and then
//     nothing of that PATCH is kept (Patch.Atomic).
//   - Upload-Checksum (sha1 or sha256) is computed while the body streams
//     to the backend; on a mismatch Patch.Body fails with
//     ErrChecksumMismatch instead of ending, the backend keeps nothing of
//     that PATCH and the client gets 460.
//   - The offset the client is told is what Backend.Write or Backend.Get
//     returns: the backend decides what is durable.
//   - Errors from the backend are answered with ErrorStatus(err) and the
//     error's message as a plain-text body.
package tus

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Version is the protocol version served.
const Version = "1.0.0"

// Extensions are the extensions served, as Tus-Extension lists them.
const Extensions = "creation,creation-with-upload,termination,checksum,expiration"

// ChecksumAlgorithms are the Upload-Checksum algorithms accepted.
const ChecksumAlgorithms = "sha1,sha256"

// StatusChecksumMismatch is the status of a PATCH whose Upload-Checksum
// does not match its body.
const StatusChecksumMismatch = 460

// ErrChecksumMismatch is what Patch.Body fails with when the body does not
// match its Upload-Checksum.
var ErrChecksumMismatch = errors.New("the PATCH body does not match its Upload-Checksum")

// errTooLong is what Patch.Body fails with when the body goes past the
// upload's length.
var errTooLong = errors.New("the PATCH body goes past Upload-Length")

// Upload is what the backend knows of one upload.
type Upload struct {
	ID string
	// Offset is the number of bytes received and kept.
	Offset   int64
	Length   int64
	Metadata Metadata
	// Expires is when an upload not touched again is removed; zero: never.
	Expires time.Time
}

// Patch is one PATCH body (or the body of a creation-with-upload POST).
type Patch struct {
	Offset int64
	// Body yields the bytes. It fails with ErrChecksumMismatch (or a
	// length error) instead of io.EOF when the body is not what it should
	// be; any other error is a broken connection.
	Body io.Reader
	// Atomic: the client sent a checksum for this PATCH, so the backend
	// must keep all of it or nothing. Otherwise it keeps what arrived
	// before a broken connection, as far as it made it durable.
	Atomic bool
	// Trailer holds the request's trailers once Body has ended.
	Trailer http.Header
}

// Backend stores uploads. Its errors are answered with
// Handler.ErrorStatus.
type Backend interface {
	// Create registers an upload of length bytes.
	Create(ctx context.Context, length int64, meta Metadata) (Upload, error)
	// Get returns the upload with its durable offset.
	Get(ctx context.Context, id string) (Upload, error)
	// Write appends p.Body at p.Offset, which the handler checked against
	// Get, and returns the upload with its new durable offset. When
	// reading p.Body fails with ErrChecksumMismatch, or any error when
	// p.Atomic, nothing of p is kept and that error is returned (wrapped).
	Write(ctx context.Context, id string, p Patch) (Upload, error)
	// Terminate removes the upload and its bytes.
	Terminate(ctx context.Context, id string) error
}

// Handler serves the protocol under Prefix ("/uploads/").
type Handler struct {
	Backend Backend
	// Prefix is the path of the creation endpoint; an upload's URL is
	// Prefix + its id.
	Prefix string
	// MaxSize is the largest Upload-Length accepted (Tus-Max-Size).
	MaxSize int64
	// ErrorStatus maps a backend error to an HTTP status; nil: 500.
	ErrorStatus func(error) int
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Tus-Resumable", Version)
	method := r.Method
	if o := r.Header.Get("X-HTTP-Method-Override"); o != "" && r.Method == http.MethodPost {
		method = strings.ToUpper(o)
	}
	if method == http.MethodOptions {
		h.options(w)
		return
	}
	if v := r.Header.Get("Tus-Resumable"); v != Version {
		w.Header().Set("Tus-Version", Version)
		msg := fmt.Sprintf("this server speaks tus %s; the request's Tus-Resumable is %q", Version, v)
		if v == "" {
			msg = fmt.Sprintf("a tus request needs the header Tus-Resumable: %s", Version)
		}
		http.Error(w, msg, http.StatusPreconditionFailed)
		return
	}
	id, ok := strings.CutPrefix(r.URL.Path, h.Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch {
	case id == "" && method == http.MethodPost:
		h.create(w, r)
	case id == "" || strings.Contains(id, "/"):
		w.Header().Set("Allow", "OPTIONS, POST")
		http.Error(w, "create an upload with POST "+h.Prefix+"; an upload's URL takes HEAD, PATCH and DELETE", http.StatusMethodNotAllowed)
	case method == http.MethodHead:
		h.head(w, r, id)
	case method == http.MethodPatch:
		h.patch(w, r, id)
	case method == http.MethodDelete:
		if err := h.Backend.Terminate(r.Context(), id); err != nil {
			h.fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "OPTIONS, HEAD, PATCH, DELETE")
		http.Error(w, "an upload's URL takes HEAD, PATCH and DELETE", http.StatusMethodNotAllowed)
	}
}

func (h *Handler) options(w http.ResponseWriter) {
	w.Header().Set("Tus-Version", Version)
	w.Header().Set("Tus-Extension", Extensions)
	w.Header().Set("Tus-Max-Size", strconv.FormatInt(h.MaxSize, 10))
	w.Header().Set("Tus-Checksum-Algorithm", ChecksumAlgorithms)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upload-Defer-Length") != "" {
		http.Error(w, "this server needs the upload's length up front (Upload-Length); a deferred length (Upload-Defer-Length) is not supported", http.StatusBadRequest)
		return
	}
	length, err := h.length(r.Header.Get("Upload-Length"))
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errTooLong) {
			status = http.StatusRequestEntityTooLarge
		}
		http.Error(w, err.Error(), status)
		return
	}
	meta, err := ParseMetadata(r.Header.Get("Upload-Metadata"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	withBody := r.Header.Get("Content-Type") == "application/offset+octet-stream"
	if withBody && r.ContentLength > length {
		http.Error(w, fmt.Sprintf("the body (%d bytes) is longer than Upload-Length (%d)", r.ContentLength, length), http.StatusRequestEntityTooLarge)
		return
	}
	sum, err := parseChecksum(r.Header.Get("Upload-Checksum"))
	if err != nil && withBody {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	up, err := h.Backend.Create(r.Context(), length, meta)
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Location", h.Prefix+up.ID)
	if withBody && (r.ContentLength > 0 || r.ContentLength == -1) {
		if got, err := h.write(r, up, sum); err == nil {
			up = got
		} else if got, err := h.Backend.Get(r.Context(), up.ID); err == nil {
			// The upload exists even though its first bytes did not all
			// arrive: the offset says what was kept.
			up = got
		}
	}
	setExpires(w, up)
	w.Header().Set("Upload-Offset", strconv.FormatInt(up.Offset, 10))
	w.WriteHeader(http.StatusCreated)
}

func (h *Handler) length(v string) (int64, error) {
	if v == "" {
		return 0, errors.New("creating an upload needs Upload-Length: the size of the file in bytes")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("Upload-Length %q is not a size in bytes", clip(v))
	}
	if n > h.MaxSize {
		return 0, fmt.Errorf("Upload-Length %d is larger than this server accepts (Tus-Max-Size %d): %w", n, h.MaxSize, errTooLong)
	}
	return n, nil
}

func (h *Handler) head(w http.ResponseWriter, r *http.Request, id string) {
	up, err := h.Backend.Get(r.Context(), id)
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Upload-Offset", strconv.FormatInt(up.Offset, 10))
	w.Header().Set("Upload-Length", strconv.FormatInt(up.Length, 10))
	if len(up.Metadata) > 0 {
		w.Header().Set("Upload-Metadata", up.Metadata.String())
	}
	setExpires(w, up)
	w.WriteHeader(http.StatusOK)
}

func (h *Handler) patch(w http.ResponseWriter, r *http.Request, id string) {
	if ct := r.Header.Get("Content-Type"); ct != "application/offset+octet-stream" {
		http.Error(w, fmt.Sprintf("a PATCH body must have Content-Type application/offset+octet-stream, not %q", clip(ct)), http.StatusUnsupportedMediaType)
		return
	}
	off, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	if err != nil || off < 0 {
		http.Error(w, "a PATCH needs Upload-Offset: the offset its body starts at", http.StatusBadRequest)
		return
	}
	sum, err := parseChecksum(r.Header.Get("Upload-Checksum"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	up, err := h.Backend.Get(r.Context(), id)
	if err != nil {
		h.fail(w, err)
		return
	}
	if off != up.Offset {
		w.Header().Set("Upload-Offset", strconv.FormatInt(up.Offset, 10))
		http.Error(w, fmt.Sprintf("Upload-Offset %d is not the upload's offset %d; ask with HEAD and go on from there", off, up.Offset), http.StatusConflict)
		return
	}
	if r.ContentLength > up.Length-up.Offset {
		http.Error(w, fmt.Sprintf("the body (%d bytes) goes past Upload-Length: %d bytes are left", r.ContentLength, up.Length-up.Offset), http.StatusRequestEntityTooLarge)
		return
	}
	up, err = h.write(r, up, sum)
	if err != nil {
		h.fail(w, err)
		return
	}
	setExpires(w, up)
	w.Header().Set("Upload-Offset", strconv.FormatInt(up.Offset, 10))
	w.WriteHeader(http.StatusNoContent)
}

// write streams the request's body to the backend, checking its checksum
// and that it stays within the upload's length.
func (h *Handler) write(r *http.Request, up Upload, sum *checksum) (Upload, error) {
	body := &checkedBody{r: r.Body, left: up.Length - up.Offset, sum: sum}
	return h.Backend.Write(r.Context(), up.ID, Patch{Offset: up.Offset, Body: body, Atomic: sum != nil, Trailer: r.Trailer})
}

// checkedBody ends a body with an error instead of io.EOF when it is not
// what the request said: another checksum, or more bytes than the upload
// has left.
type checkedBody struct {
	r    io.Reader
	left int64
	sum  *checksum
}

func (b *checkedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	if int64(n) > b.left {
		return 0, fmt.Errorf("%w: only %d bytes were left", errTooLong, b.left)
	}
	b.left -= int64(n)
	if b.sum != nil {
		b.sum.h.Write(p[:n])
	}
	if err == io.EOF && b.sum != nil && string(b.sum.h.Sum(nil)) != string(b.sum.want) {
		return n, fmt.Errorf("%w (%s)", ErrChecksumMismatch, b.sum.algo)
	}
	return n, err
}

type checksum struct {
	algo string
	want []byte
	h    hash.Hash
}

// parseChecksum reads Upload-Checksum: "<algorithm> <base64 digest>".
func parseChecksum(v string) (*checksum, error) {
	if v == "" {
		return nil, nil
	}
	algo, b64, ok := strings.Cut(v, " ")
	want, err := base64.StdEncoding.DecodeString(b64)
	if !ok || err != nil {
		return nil, fmt.Errorf("Upload-Checksum %q is not \"<algorithm> <base64 digest>\"", clip(v))
	}
	c := &checksum{algo: algo, want: want}
	switch algo {
	case "sha1":
		c.h = sha1.New()
	case "sha256":
		c.h = sha256.New()
	default:
		return nil, fmt.Errorf("Upload-Checksum algorithm %q is not supported; use one of %s", clip(algo), ChecksumAlgorithms)
	}
	if len(want) != c.h.Size() {
		return nil, fmt.Errorf("Upload-Checksum %q has a %d-byte digest; %s has %d", clip(v), len(want), algo, c.h.Size())
	}
	return c, nil
}

func (h *Handler) status(err error) int {
	switch {
	case errors.Is(err, ErrChecksumMismatch):
		return StatusChecksumMismatch
	case errors.Is(err, errTooLong):
		return http.StatusRequestEntityTooLarge
	case h.ErrorStatus != nil:
		return h.ErrorStatus(err)
	}
	return http.StatusInternalServerError
}

func (h *Handler) fail(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), h.status(err))
}

func setExpires(w http.ResponseWriter, up Upload) {
	if !up.Expires.IsZero() {
		w.Header().Set("Upload-Expires", up.Expires.UTC().Format(http.TimeFormat))
	}
}

// Metadata is the Upload-Metadata of an upload: keys to values.
type Metadata map[string]string

// ParseMetadata reads an Upload-Metadata header: comma-separated pairs of
// a key and, optionally, its value in base64.
func ParseMetadata(v string) (Metadata, error) {
	m := Metadata{}
	if strings.TrimSpace(v) == "" {
		return m, nil
	}
	for pair := range strings.SplitSeq(v, ",") {
		key, val, _ := strings.Cut(strings.TrimSpace(pair), " ")
		if key == "" || strings.ContainsAny(key, " ,") {
			return nil, fmt.Errorf("Upload-Metadata %q: an empty key", clip(v))
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("Upload-Metadata: key %q is given twice", clip(key))
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("Upload-Metadata: the value of %q is not base64", clip(key))
		}
		m[key] = string(b)
	}
	return m, nil
}

// String encodes m as an Upload-Metadata header, keys sorted.
func (m Metadata) String() string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k
		if m[k] != "" {
			parts[i] += " " + base64.StdEncoding.EncodeToString([]byte(m[k]))
		}
	}
	return strings.Join(parts, ",")
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
