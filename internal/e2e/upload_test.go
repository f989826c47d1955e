package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/isofs/isotest"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/server"
	"github.com/quarry-project/quarry/internal/store"
)

// tusClient speaks tus to a control plane with one token: the few
// requests the tests need, each checked by the caller.
type tusClient struct {
	t     *testing.T
	base  string
	token string
}

func newTus(t *testing.T, s *quarrytest.Server, token string) *tusClient {
	return &tusClient{t: t, base: s.URL, token: token}
}

func (c *tusClient) do(method, url string, body io.Reader, hdr map[string]string) *http.Response {
	c.t.Helper()
	if strings.HasPrefix(url, "/") {
		url = c.base + url
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if b, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(b.Len())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func bodyOf(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func metadata(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, kv[i]+" "+base64.StdEncoding.EncodeToString([]byte(kv[i+1])))
	}
	return strings.Join(parts, ",")
}

// create starts an upload and returns its URL, failing the test unless 201.
func (c *tusClient) create(length int, meta string) string {
	c.t.Helper()
	resp := c.do("POST", "/uploads/", nil, map[string]string{"Upload-Length": strconv.Itoa(length), "Upload-Metadata": meta})
	if resp.StatusCode != http.StatusCreated {
		c.t.Fatalf("creating an upload: %s: %s", resp.Status, bodyOf(resp))
	}
	return resp.Header.Get("Location")
}

func (c *tusClient) offset(url string) int64 {
	c.t.Helper()
	resp := c.do("HEAD", url, nil, nil)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("HEAD %s: %s", url, resp.Status)
	}
	n, _ := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
	return n
}

// patch sends data at off, with extra headers, and returns the response.
func (c *tusClient) patch(url string, off int64, data []byte, hdr ...string) *http.Response {
	c.t.Helper()
	h := map[string]string{"Upload-Offset": strconv.FormatInt(off, 10), "Content-Type": "application/offset+octet-stream"}
	for i := 0; i+1 < len(hdr); i += 2 {
		h[hdr[i]] = hdr[i+1]
	}
	return c.do("PATCH", url, bytes.NewReader(data), h)
}

// patchWithTrailer sends the rest of the file and, in a trailer, the
// expected digest of the whole file, as the CLI does.
func (c *tusClient) patchWithTrailer(url string, off int64, data []byte, digest string) *http.Response {
	c.t.Helper()
	req, err := http.NewRequest("PATCH", c.base+url, io.MultiReader(bytes.NewReader(data)))
	if err != nil {
		c.t.Fatal(err)
	}
	req.ContentLength = -1
	req.Trailer = http.Header{"Quarry-Checksum": {digest}}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Upload-Offset", strconv.FormatInt(off, 10))
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func isoBytes(t *testing.T, label string, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := (isotest.Image{Label: label, Bootable: true, Size: size}).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func jobOfUpload(url string) string { return url[strings.LastIndex(url, "/")+1:] }

// TestUploadISO: an ISO sent in two writes, the second with the whole
// file's digest in a trailer, lands in iso/ READY with its label and OS
// guess, verified; the job says so; a scan does not register it again.
func TestUploadISO(t *testing.T) {
	c := newCluster(t)
	pool := localPool(t, c)
	data := isoBytes(t, "Ubuntu-Server 24.04 LTS amd64", 3*mib+4096)
	tc := newTus(t, c.s, c.s.AdminToken)
	url := tc.create(len(data), metadata("filename", "ubuntu-24.04-live-server-amd64.iso", "pool", "local"))
	job := jobOfUpload(url)
	j := getJob(t, c.s, job)
	if j.GetKind() != "upload" || j.GetState() != quarryv1.JobState_JOB_STATE_RUNNING || j.GetNodeName() != "n1" {
		t.Fatalf("job %v; want a RUNNING upload on n1", j)
	}
	im := getImage(t, c.s, j.GetImageId())
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_UPLOADING || im.GetOrigin() != "uploaded" || im.GetPath() != "iso/ubuntu-24.04-live-server-amd64.iso" {
		t.Fatalf("image %v; want UPLOADING at iso/…", im)
	}
	if got := tc.offset(url); got != 0 {
		t.Fatalf("offset %d of a new upload", got)
	}
	half := len(data) / 2
	if resp := tc.patch(url, 0, data[:half]); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != strconv.Itoa(half) {
		t.Fatalf("first PATCH: %s %q: %s", resp.Status, resp.Header.Get("Upload-Offset"), bodyOf(resp))
	}
	if got := tc.offset(url); got != int64(half) {
		t.Fatalf("offset %d after the first PATCH, want %d", got, half)
	}
	resp := tc.patchWithTrailer(url, int64(half), data[half:], "sha256:"+sha256Hex(data))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("last PATCH: %s: %s", resp.Status, bodyOf(resp))
	}
	j = getJob(t, c.s, job)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || !strings.Contains(j.GetMessage(), "verified") {
		t.Fatalf("job %v; want SUCCEEDED and verified", j)
	}
	im = getImage(t, c.s, j.GetImageId())
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetDigest() != "sha256:"+sha256Hex(data) || !im.GetVerified() ||
		im.GetVolumeLabel() != "Ubuntu-Server 24.04 LTS amd64" || im.GetOs().GetDistro() != "ubuntu" || im.GetKind() != quarryv1.ImageKind_IMAGE_KIND_ISO ||
		im.GetSizeBytes() != uint64(len(data)) {
		t.Fatalf("image %v", im)
	}
	dir := c.agents["n1"].Opts.LocalPath("/srv/local")
	if got, err := os.ReadFile(filepath.Join(dir, "iso/ubuntu-24.04-live-server-amd64.iso")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file in iso/ is not what was sent (%v)", err)
	}
	if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}
	// HEAD of a finished upload: complete.
	if got := tc.offset(url); got != int64(len(data)) {
		t.Errorf("offset %d of a finished upload", got)
	}
	if _, err := c.s.Images.ScanISOs(t.Context(), connect.NewRequest(&quarryv1.ScanISOsRequest{StoragePoolId: pool.GetId()})); err != nil {
		t.Fatal(err)
	}
	ims, err := c.s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ims.Msg.GetImages()); n != 1 {
		t.Errorf("%d images after a scan, want the uploaded one only: %v", n, ims.Msg.GetImages())
	}
	// A second upload of the same name is refused at creation.
	if resp := tc.do("POST", "/uploads/", nil, map[string]string{"Upload-Length": "10",
		"Upload-Metadata": metadata("filename", "ubuntu-24.04-live-server-amd64.iso", "pool", pool.GetId())}); resp.StatusCode != http.StatusConflict {
		t.Errorf("same name again: %s: %s", resp.Status, bodyOf(resp))
	}
}

// TestUploadDisk: a qcow2 lands in images/ with its format and virtual
// size; a PATCH whose Upload-Checksum does not match is refused with 460
// and none of it kept; a whole-file mismatch fails the upload naming both
// digests and leaves nothing behind.
func TestUploadDisk(t *testing.T) {
	c := newCluster(t)
	localPool(t, c)
	tc := newTus(t, c.s, c.s.AdminToken)
	data := qcow2Bytes(2*mib, 10<<30)
	url := tc.create(len(data), metadata("filename", "disk.qcow2", "pool", "local", "checksum", "sha256:"+sha256Hex(data)))
	bad := sha256.Sum256([]byte("not these bytes"))
	resp := tc.patch(url, 0, data[:mib], "Upload-Checksum", "sha256 "+base64.StdEncoding.EncodeToString(bad[:]))
	if resp.StatusCode != 460 {
		t.Fatalf("PATCH with a wrong checksum: %s: %s", resp.Status, bodyOf(resp))
	}
	if got := tc.offset(url); got != 0 {
		t.Fatalf("offset %d after a refused PATCH; want 0", got)
	}
	good := sha256.Sum256(data[:mib])
	if resp := tc.patch(url, 0, data[:mib], "Upload-Checksum", "sha256 "+base64.StdEncoding.EncodeToString(good[:])); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH with the right checksum: %s: %s", resp.Status, bodyOf(resp))
	}
	if resp := tc.patch(url, mib, data[mib:]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("last PATCH: %s: %s", resp.Status, bodyOf(resp))
	}
	j := getJob(t, c.s, jobOfUpload(url))
	im := getImage(t, c.s, j.GetImageId())
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetFormat() != "qcow2" || im.GetVirtualSizeBytes() != 10<<30 ||
		im.GetPath() != "images/disk.qcow2" || im.GetKind() != quarryv1.ImageKind_IMAGE_KIND_DISK || !im.GetVerified() {
		t.Fatalf("image %v", im)
	}

	// The whole file does not match the checksum given at creation.
	other := randomData(mib, 3)
	url = tc.create(len(other), metadata("filename", "other.raw", "pool", "local", "checksum", "sha256:"+sha256Hex(data)))
	resp = tc.patch(url, 0, other)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(bodyOf(resp), sha256Hex(other)) {
		t.Fatalf("mismatching upload: %s: %s", resp.Status, bodyOf(resp))
	}
	j = getJob(t, c.s, jobOfUpload(url))
	if j.GetState() != quarryv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), sha256Hex(data)) || !strings.Contains(j.GetMessage(), sha256Hex(other)) {
		t.Fatalf("job %v; want FAILED naming both digests", j)
	}
	if im := getImage(t, c.s, j.GetImageId()); im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR {
		t.Errorf("image %v; want ERROR", im)
	}
	dir := c.agents["n1"].Opts.LocalPath("/srv/local")
	if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}
	if _, err := os.Stat(filepath.Join(dir, "images/other.raw")); err == nil {
		t.Error("a file that failed its checksum is in images/")
	}
	if resp := tc.do("HEAD", url, nil, nil); resp.StatusCode != http.StatusGone {
		t.Errorf("HEAD of a failed upload: %s", resp.Status)
	}
}

func qcow2Bytes(size int, virtual uint64) []byte {
	b := randomData(size, 5)
	copy(b, []byte{'Q', 'F', 'I', 0xfb, 0, 0, 0, 3})
	for i := 8; i < 24; i++ {
		b[i] = 0
	}
	for i := range 8 {
		b[24+i] = byte(virtual >> (56 - 8*i))
	}
	return b
}

// TestUploadRefusals: what creation refuses, and who may touch an upload.
func TestUploadRefusals(t *testing.T) {
	c := newCluster(t)
	localPool(t, c)
	admin := newTus(t, c.s, c.s.AdminToken)
	for _, tt := range []struct {
		name   string
		hdr    map[string]string
		status int
		want   string
	}{
		{"no filename", map[string]string{"Upload-Length": "10", "Upload-Metadata": metadata("pool", "local")}, 400, "filename"},
		{"bad name", map[string]string{"Upload-Length": "10", "Upload-Metadata": metadata("filename", "../x.iso", "pool", "local")}, 400, ""},
		{"no pool", map[string]string{"Upload-Length": "10", "Upload-Metadata": metadata("filename", "a.iso")}, 400, "pool"},
		{"unknown pool", map[string]string{"Upload-Length": "10", "Upload-Metadata": metadata("filename", "a.iso", "pool", "nope")}, 404, "no pool"},
		{"deferred length", map[string]string{"Upload-Defer-Length": "1", "Upload-Metadata": metadata("filename", "a.iso", "pool", "local")}, 400, "deferred length"},
		{"negative length", map[string]string{"Upload-Length": "-5", "Upload-Metadata": metadata("filename", "a.iso", "pool", "local")}, 400, ""},
		{"absurd length", map[string]string{"Upload-Length": strconv.FormatInt(1<<50, 10), "Upload-Metadata": metadata("filename", "a.iso", "pool", "local")}, 413, "Tus-Max-Size"},
		{"larger than the pool's free space", map[string]string{"Upload-Length": strconv.FormatInt(1<<41, 10), "Upload-Metadata": metadata("filename", "a.iso", "pool", "local")}, 400, "free"},
		{"bad kind", map[string]string{"Upload-Length": "10", "Upload-Metadata": metadata("filename", "a.iso", "pool", "local", "kind", "tape")}, 400, "kind"},
		{"bad checksum", map[string]string{"Upload-Length": "10", "Upload-Metadata": metadata("filename", "a.iso", "pool", "local", "checksum", "md5:00")}, 400, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := admin.do("POST", "/uploads/", nil, tt.hdr)
			if resp.StatusCode != tt.status || !strings.Contains(bodyOf(resp), tt.want) {
				t.Errorf("%s: %s; want %d saying %q", tt.name, resp.Status, tt.status, tt.want)
			}
		})
	}

	viewer := newTus(t, c.s, createToken(t, c.s, store.RoleViewer, "v", time.Hour))
	if resp := viewer.do("POST", "/uploads/", nil, map[string]string{"Upload-Length": "10", "Upload-Metadata": metadata("filename", "a.iso", "pool", "local")}); resp.StatusCode != http.StatusForbidden || !strings.Contains(bodyOf(resp), "operator") {
		t.Errorf("viewer: %s: %s", resp.Status, bodyOf(resp))
	}
	if resp := newTus(t, c.s, "").do("HEAD", "/uploads/x", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %s", resp.Status)
	}
	op1 := newTus(t, c.s, createToken(t, c.s, store.RoleOperator, "op1", time.Hour))
	op2 := newTus(t, c.s, createToken(t, c.s, store.RoleOperator, "op2", time.Hour))
	url := op1.create(10, metadata("filename", "mine.raw", "pool", "local"))
	if resp := op2.patch(url, 0, []byte("0123456789")); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another operator's PATCH: %s: %s", resp.Status, bodyOf(resp))
	}
	if resp := op2.do("DELETE", url, nil, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another operator's DELETE: %s", resp.Status)
	}
	if got := admin.offset(url); got != 0 {
		t.Errorf("admin HEAD: offset %d", got)
	}
	if resp := op1.patch(url, 0, []byte("0123456789")); resp.StatusCode != http.StatusNoContent {
		t.Errorf("owner's PATCH: %s: %s", resp.Status, bodyOf(resp))
	}
	// Creation and refusals are in the audit log.
	audit, err := c.s.Audit.ListAudit(t.Context(), connect.NewRequest(&quarryv1.ListAuditRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var created, refused bool
	for _, e := range audit.Msg.GetEntries() {
		created = created || e.GetProcedure() == "uploads POST" && e.GetResult() == "ok" && strings.Contains(e.GetActor(), "op1")
		refused = refused || e.GetProcedure() == "uploads POST" && e.GetResult() == "permission_denied"
	}
	if !created || !refused {
		t.Errorf("audit log: creation %v, refusal %v", created, refused)
	}
}

// TestUploadCancelAndExpiry: cancelling an upload's job is termination;
// an upload nobody touches expires; both remove the partial file.
func TestUploadCancelAndExpiry(t *testing.T) {
	// Long enough that a loaded machine does not expire the first upload
	// between its creation and its PATCH.
	const expiry = 6 * time.Second
	c := newCluster(t, func(cfg *server.Config) { cfg.UploadExpiry = expiry })
	localPool(t, c)
	tc := newTus(t, c.s, c.s.AdminToken)
	dir := c.agents["n1"].Opts.LocalPath("/srv/local")

	// Cancelled while a write streams: the write is cut, the partial file goes.
	url := tc.create(16*mib, metadata("filename", "c.raw", "pool", "local"))
	done := tc.slowPatch(url, 0, randomData(16*mib, 1), 4*mib)
	waitUploaded(t, c.s, jobOfUpload(url), mib)
	if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) == 0 {
		t.Fatal("no partial file while uploading")
	}
	if _, err := c.s.Jobs.CancelJob(t.Context(), connect.NewRequest(&quarryv1.CancelJobRequest{Id: jobOfUpload(url)})); err != nil {
		t.Fatal(err)
	}
	if st := <-done; st == http.StatusNoContent {
		t.Error("a write to a cancelled upload succeeded")
	}
	quarrytest.Eventually(t, 5*time.Second, func() error {
		if j := getJob(t, c.s, jobOfUpload(url)); j.GetState() != quarryv1.JobState_JOB_STATE_CANCELLED {
			return fmt.Errorf("job %v", j.GetState())
		}
		if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
			return fmt.Errorf(".quarry/partial holds %v", left)
		}
		return nil
	})
	if resp := tc.do("HEAD", url, nil, nil); resp.StatusCode != http.StatusGone {
		t.Errorf("HEAD of a cancelled upload: %s", resp.Status)
	}

	url = tc.create(4*mib, metadata("filename", "e.raw", "pool", "local"))
	resp := tc.patch(url, 0, randomData(mib, 2))
	exp, err := http.ParseTime(resp.Header.Get("Upload-Expires"))
	if err != nil || time.Until(exp) > expiry+time.Second {
		t.Errorf("Upload-Expires %q", resp.Header.Get("Upload-Expires"))
	}
	quarrytest.Eventually(t, 3*expiry, func() error {
		if j := getJob(t, c.s, jobOfUpload(url)); j.GetState() != quarryv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), "expired") {
			return fmt.Errorf("job %v: %s", j.GetState(), j.GetMessage())
		}
		if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
			return fmt.Errorf(".quarry/partial holds %v", left)
		}
		return nil
	})
}

// TestUploadClientKilled: the connection drops in the middle of a PATCH;
// HEAD tells the durable offset, and the upload goes on from there to a
// whole, verified file.
func TestUploadClientKilled(t *testing.T) {
	c := newCluster(t)
	localPool(t, c)
	tc := newTus(t, c.s, c.s.AdminToken)
	data := randomData(24*mib, 9)
	url := tc.create(len(data), metadata("filename", "k.raw", "pool", "local", "checksum", "sha256:"+sha256Hex(data)))

	// A raw request that announces everything and sends 10 MiB, then dies.
	conn, err := net.Dial("tcp", strings.TrimPrefix(c.s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer %s\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n",
		url, c.s.AdminToken, len(data))
	conn.Write(data[:10*mib])
	time.Sleep(300 * time.Millisecond)
	conn.Close()

	var off int64
	quarrytest.Eventually(t, 10*time.Second, func() error {
		resp := tc.do("HEAD", url, nil, nil)
		off, _ = strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
		if resp.StatusCode != 200 || off == 0 {
			return fmt.Errorf("HEAD: %s offset %d", resp.Status, off)
		}
		return nil
	})
	if off > 10*mib {
		t.Fatalf("offset %d after 10 MiB were sent", off)
	}
	if resp := tc.patch(url, off, data[off:]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resuming at %d: %s: %s", off, resp.Status, bodyOf(resp))
	}
	j := getJob(t, c.s, jobOfUpload(url))
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}
	got, _ := os.ReadFile(filepath.Join(c.agents["n1"].Opts.LocalPath("/srv/local"), "images/k.raw"))
	if !bytes.Equal(got, data) {
		t.Fatal("the uploaded file differs from the original")
	}
}

// TestUploadKindFromContent: without a kind, the name only guesses where
// an upload goes; its bytes decide when it ends. An ISO named like a disk
// lands in iso/ with its label, a qcow2 named like an ISO in images/ with
// its format and virtual size. A kind given stands, whatever the bytes.
func TestUploadKindFromContent(t *testing.T) {
	c := newCluster(t)
	pool := localPool(t, c)
	dir := c.agents["n1"].Opts.LocalPath("/srv/local")
	tc := newTus(t, c.s, c.s.AdminToken)
	iso := isoBytes(t, "Debian 13 amd64 n", 2*mib)
	qcow := make([]byte, mib)
	copy(qcow, "QFI\xfb\x00\x00\x00\x03")
	binary.BigEndian.PutUint64(qcow[24:], 20<<30)
	tests := []struct {
		name, kind string
		data       []byte
		guessed    string // the image's path while it uploads
		path       string
		want       quarryv1.ImageKind
		format     string
	}{
		{"installer.img", "", iso, "images/installer.img", "iso/installer.img", quarryv1.ImageKind_IMAGE_KIND_ISO, "iso"},
		{"vm.iso", "", qcow, "iso/vm.iso", "images/vm.iso", quarryv1.ImageKind_IMAGE_KIND_DISK, "qcow2"},
		// Bytes that prove nothing: the name's guess stands.
		{"plain.iso", "", randomData(mib, 51), "iso/plain.iso", "iso/plain.iso", quarryv1.ImageKind_IMAGE_KIND_ISO, "raw"},
		{"kept.img", "disk", iso, "images/kept.img", "images/kept.img", quarryv1.ImageKind_IMAGE_KIND_DISK, "iso"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			meta := metadata("filename", tt.name, "pool", "local", "checksum", "sha256:"+sha256Hex(tt.data))
			if tt.kind != "" {
				meta = metadata("filename", tt.name, "pool", "local", "kind", tt.kind, "checksum", "sha256:"+sha256Hex(tt.data))
			}
			url := tc.create(len(tt.data), meta)
			j := getJob(t, c.s, jobOfUpload(url))
			if im := getImage(t, c.s, j.GetImageId()); im.GetPath() != tt.guessed {
				t.Errorf("while uploading at %s; want %s (from the name)", im.GetPath(), tt.guessed)
			}
			if resp := tc.patch(url, 0, tt.data); resp.StatusCode != http.StatusNoContent {
				t.Fatalf("PATCH: %s: %s", resp.Status, bodyOf(resp))
			}
			j = getJob(t, c.s, jobOfUpload(url))
			im := getImage(t, c.s, j.GetImageId())
			if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY ||
				!im.GetVerified() || im.GetPath() != tt.path || im.GetKind() != tt.want || im.GetFormat() != tt.format {
				t.Fatalf("job %v\nimage %v; want READY, verified, %v %s at %s", j, im, tt.want, tt.format, tt.path)
			}
			t.Logf("job: %s", j.GetMessage())
			if got, err := os.ReadFile(filepath.Join(dir, tt.path)); err != nil || !bytes.Equal(got, tt.data) {
				t.Fatalf("%s is not what was sent (%v)", tt.path, err)
			}
			if tt.path != tt.guessed {
				if _, err := os.Stat(filepath.Join(dir, tt.guessed)); err == nil {
					t.Errorf("%s exists too", tt.guessed)
				}
			}
			switch tt.format {
			case "qcow2":
				if im.GetVirtualSizeBytes() != 20<<30 {
					t.Errorf("virtual size %d, want 20 GiB", im.GetVirtualSizeBytes())
				}
			case "iso":
				if tt.want == quarryv1.ImageKind_IMAGE_KIND_ISO && im.GetVolumeLabel() != "Debian 13 amd64 n" {
					t.Errorf("label %q", im.GetVolumeLabel())
				}
			}
		})
	}
	// A scan registers none of these files a second time.
	if _, err := c.s.Images.ScanISOs(t.Context(), connect.NewRequest(&quarryv1.ScanISOsRequest{StoragePoolId: pool.GetId()})); err != nil {
		t.Fatal(err)
	}
	ims, err := c.s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: pool.GetId()}))
	if err != nil || len(ims.Msg.GetImages()) != len(tests) {
		t.Errorf("images after a scan: %v (%v); want %d", ims.Msg.GetImages(), err, len(tests))
	}
}
