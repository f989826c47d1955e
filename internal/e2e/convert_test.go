package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/qemuimg/qemutest"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// rawAndQCOW2 makes a raw disk of 4 MiB (data, a hole, more data) and the
// same disk as qcow2 with the real qemu-img.
func rawAndQCOW2(t *testing.T) (raw, qcow2 []byte) {
	t.Helper()
	q := qemutest.Require(t)
	dir := t.TempDir()
	raw = make([]byte, 4*mib)
	for i := range mib {
		raw[i] = byte(i * 7)
		raw[3*mib+i] = byte(i*13 + 1)
	}
	if err := os.WriteFile(filepath.Join(dir, "disk.raw"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(q.Path, "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	if qcow2, err = os.ReadFile(filepath.Join(dir, "disk.qcow2")); err != nil {
		t.Fatal(err)
	}
	return raw, qcow2
}

func convertImage(t *testing.T, s *quarrytest.Server, id, format, name string) *quarryv1.ConvertImageResponse {
	t.Helper()
	resp, err := s.Images.ConvertImage(t.Context(), connect.NewRequest(&quarryv1.ConvertImageRequest{Id: id, Format: format, Name: name}))
	if err != nil {
		t.Fatalf("ConvertImage: %v", err)
	}
	return resp.Msg
}

// TestConvertImage: a qcow2 generated with qemu-img and downloaded into a
// pool is converted to raw on a node of the pool: the new image is READY,
// raw, with the right virtual size and digest, and its bytes are the raw
// disk's, byte for byte; the CLI converts it back to a checked qcow2.
// Nothing is left in .quarry/partial.
func TestConvertImage(t *testing.T) {
	raw, qcow2 := rawAndQCOW2(t)
	c, p := isoCluster(t)
	o := origintest.New(t)
	f := o.Add("/disk.qcow2", origintest.Bytes(qcow2))
	m := download(t, c.s, p.GetId(), f.URL(), "sha256:"+f.SHA256())
	if j := waitJob(t, c.s, m.GetJob().GetId(), 20*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("download %v", j)
	}
	src := getImage(t, c.s, m.GetImage().GetId())
	if src.GetFormat() != "qcow2" || src.GetVirtualSizeBytes() != 4*mib {
		t.Fatalf("downloaded image %v; want qcow2 of 4 MiB", src)
	}

	conv := convertImage(t, c.s, src.GetId(), "raw", "")
	if conv.GetImage().GetState() != quarryv1.ImageState_IMAGE_STATE_PENDING || conv.GetImage().GetName() != "disk.raw" ||
		conv.GetJob().GetKind() != "convert" {
		t.Errorf("ConvertImage = %v; want a PENDING disk.raw and its convert job", conv)
	}
	j := waitJob(t, c.s, conv.GetJob().GetId(), 20*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() != "n1" {
		t.Fatalf("convert job %v; want SUCCEEDED on n1", j)
	}
	sum := sha256.Sum256(raw)
	im := getImage(t, c.s, conv.GetImage().GetId())
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetFormat() != "raw" || im.GetVirtualSizeBytes() != 4*mib ||
		im.GetSizeBytes() != 4*mib || im.GetDigest() != "sha256:"+hex.EncodeToString(sum[:]) || im.GetPath() != "images/disk.raw" ||
		im.GetOrigin() != "converted" {
		t.Errorf("converted image %v", im)
	}
	dir := filepath.Join(c.shared, "isos")
	got, err := os.ReadFile(filepath.Join(dir, "images/disk.raw"))
	if err != nil || !bytes.Equal(got, raw) {
		t.Errorf("images/disk.raw is not the raw disk the qcow2 was made from (%v)", err)
	}
	if src := getImage(t, c.s, src.GetId()); src.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || src.GetFormat() != "qcow2" {
		t.Errorf("the source changed: %v", src)
	}

	// The nodes say which qemu-img they have.
	node, err := c.s.Nodes.GetNode(t.Context(), connect.NewRequest(&quarryv1.GetNodeRequest{Id: c.ids["n1"]}))
	if err != nil || node.Msg.GetNode().GetQemuImgVersion() != qemutest.Require(t).Version {
		t.Errorf("node n1 = %v, %v; want qemu-img %s", node, err, qemutest.Require(t).Version)
	}

	// Back to qcow2 with the CLI, under another name: checked.
	useToken(c.s.URL, c.s.AdminToken)
	out := mustQuarry(t, c.s.URL, "image", "convert", "disk.raw", "--format", "qcow2", "--name", "again.qcow2", "--wait")
	back := images(t, c.s, p.GetId())["images/again.qcow2"]
	if back.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || back.GetFormat() != "qcow2" || back.GetVirtualSizeBytes() != 4*mib {
		t.Errorf("converted back: %v (CLI said %q)", back, out)
	}
	jobs, err := c.s.Jobs.ListJobs(t.Context(), connect.NewRequest(&quarryv1.ListJobsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var checked bool
	for _, j := range jobs.Msg.GetJobs() {
		if j.GetImageId() == back.GetId() {
			checked = strings.Contains(j.GetMessage(), "qemu-img check: no errors")
		}
	}
	if !checked {
		t.Errorf("the qcow2 conversion's job does not say qemu-img checked it: %v", jobs.Msg.GetJobs())
	}
	if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}

	// Bad requests change nothing.
	for _, req := range []*quarryv1.ConvertImageRequest{
		{Id: src.GetId(), Format: "vmdk"},
		{Id: src.GetId(), Format: "qcow2"},
		{Id: src.GetId(), Format: "raw", Name: "../x"},
		{Id: src.GetId(), Format: "raw"}, // disk.raw is taken
	} {
		if _, err := c.s.Images.ConvertImage(t.Context(), connect.NewRequest(req)); err == nil {
			t.Errorf("ConvertImage(%v) succeeded", req)
		}
	}
	if n := len(images(t, c.s, p.GetId())); n != 3 {
		t.Errorf("%d images after refused requests; want 3", n)
	}
}

// TestConvertNeedsQemuImg: when no node that mounts the pool has qemu-img,
// the job fails at once saying which node lacks it and what to install.
func TestConvertNeedsQemuImg(t *testing.T) {
	_, qcow2 := rawAndQCOW2(t)
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "bare", QemuImg: "/nonexistent/qemu-img"})
	mkdir(t, a.Opts.LocalPath("/srv/local"))
	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "local", Path: "/srv/local", AssignedNodeIds: []string{a.NodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	pool := resp.Msg.GetPool()
	o := origintest.New(t)
	f := o.Add("/disk.qcow2", origintest.Bytes(qcow2))
	var m *quarryv1.DownloadImageResponse
	quarrytest.Eventually(t, 10*time.Second, func() error {
		r, err := s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{Url: f.URL(), StoragePoolId: pool.GetId()}))
		if err != nil {
			return err
		}
		m = r.Msg
		return nil
	})
	if j := waitJob(t, s, m.GetJob().GetId(), 20*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("download %v", j)
	}
	if n, err := s.Nodes.GetNode(t.Context(), connect.NewRequest(&quarryv1.GetNodeRequest{Id: a.NodeID})); err != nil || n.Msg.GetNode().GetQemuImgVersion() != "" {
		t.Errorf("node bare = %v, %v; want no qemu-img", n, err)
	}
	conv := convertImage(t, s, m.GetImage().GetId(), "raw", "")
	j := waitJob(t, s, conv.GetJob().GetId(), 10*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), "bare: qemu-img is not installed") ||
		!strings.Contains(j.GetMessage(), "apt-get install qemu-utils") {
		t.Errorf("job %v; want FAILED naming node bare and qemu-utils", j)
	}
	if im := getImage(t, s, conv.GetImage().GetId()); im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR {
		t.Errorf("image %v; want ERROR", im)
	}
	if _, err := os.Stat(a.Opts.LocalPath("/srv/local/images/disk.raw")); !os.IsNotExist(err) {
		t.Errorf("images/disk.raw exists: %v", err)
	}
}

// TestConvertCancel: cancelling a running conversion kills qemu-img,
// removes the partial file and leaves no image file; the job says
// CANCELLED. The node's qemu-img is a wrapper that writes a little and
// then hangs, so the cancel always comes mid-way.
func TestConvertCancel(t *testing.T) {
	_, qcow2 := rawAndQCOW2(t)
	q := qemutest.Require(t)
	wrapper := filepath.Join(t.TempDir(), "qemu-img")
	script := "#!/bin/sh\nif [ \"$1\" = convert ]; then\n  for last; do :; done\n  printf 'partial' > \"$last\"\n" +
		"  printf '    (12.00/100%%)\\r'\n  exec sleep 120\nfi\nexec " + q.Path + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "slow", QemuImg: wrapper})
	dir := a.Opts.LocalPath("/srv/local")
	mkdir(t, dir)
	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "local", Path: "/srv/local", AssignedNodeIds: []string{a.NodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	o := origintest.New(t)
	f := o.Add("/disk.qcow2", origintest.Bytes(qcow2))
	var m *quarryv1.DownloadImageResponse
	quarrytest.Eventually(t, 10*time.Second, func() error {
		r, err := s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{Url: f.URL(), StoragePoolId: resp.Msg.GetPool().GetId()}))
		if err != nil {
			return err
		}
		m = r.Msg
		return nil
	})
	if j := waitJob(t, s, m.GetJob().GetId(), 20*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("download %v", j)
	}
	conv := convertImage(t, s, m.GetImage().GetId(), "raw", "")
	partial := filepath.Join(dir, ".quarry/partial", conv.GetJob().GetId())
	quarrytest.Eventually(t, 10*time.Second, func() error {
		_, err := os.Stat(partial)
		return err
	})
	if _, err := s.Jobs.CancelJob(t.Context(), connect.NewRequest(&quarryv1.CancelJobRequest{Id: conv.GetJob().GetId()})); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, s, conv.GetJob().GetId(), 10*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_CANCELLED {
		t.Errorf("job %v; want CANCELLED", j)
	}
	quarrytest.Eventually(t, 10*time.Second, func() error {
		if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
			return &os.PathError{Op: "partial files left", Path: strings.Join(left, ","), Err: os.ErrExist}
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, "images/disk.raw")); !os.IsNotExist(err) {
		t.Errorf("images/disk.raw exists after the cancel: %v", err)
	}
	if im := getImage(t, s, conv.GetImage().GetId()); im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR {
		t.Errorf("image %v; want ERROR (cancelled)", im)
	}
}
