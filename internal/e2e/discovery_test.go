package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/isofs/isotest"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// isoCluster is the three-node cluster with a shared pool "isos" at
// /srv/nfs/isos assigned to n1 (n1 and n2 mount it; n3's /srv/nfs is its
// own disk), scans tuned for tests.
func isoCluster(t *testing.T, opts ...quarrytest.ServerOption) (*cluster, *quarryv1.StoragePool) {
	t.Helper()
	opts = append([]quarrytest.ServerOption{quarrytest.WithScans(time.Hour, -1, 500*time.Millisecond)}, opts...)
	c := newCluster(t, opts...)
	p := c.createPool(t, "isos", "/srv/nfs/isos", true, "n1")
	c.waitMounts(t, p.GetId(), map[string]bool{"n1": true, "n2": true, "n3": false})
	return c, p
}

func writeISO(t *testing.T, path, label string, size int64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := (isotest.Image{Label: label, Bootable: true, Size: size}).WriteFile(path); err != nil {
		t.Fatal(err)
	}
}

// images returns the pool's images by path.
func images(t *testing.T, s *quarrytest.Server, poolID string) map[string]*quarryv1.Image {
	t.Helper()
	out := map[string]*quarryv1.Image{}
	req := &quarryv1.ListImagesRequest{StoragePoolId: poolID, PageSize: 1000}
	for {
		resp, err := s.Images.ListImages(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range resp.Msg.GetImages() {
			out[im.GetPath()] = im
		}
		if req.PageToken = resp.Msg.GetNextPageToken(); req.PageToken == "" {
			return out
		}
	}
}

// waitImage polls until the image at path is in state, within d.
func waitImage(t *testing.T, s *quarrytest.Server, poolID, path string, state quarryv1.ImageState, d time.Duration) *quarryv1.Image {
	t.Helper()
	var im *quarryv1.Image
	quarrytest.Eventually(t, d, func() error {
		im = images(t, s, poolID)[path]
		if im.GetState() != state {
			return fmt.Errorf("%s is %v, want %v", path, im.GetState(), state)
		}
		return nil
	})
	return im
}

func scan(t *testing.T, s *quarrytest.Server, poolID string) *quarryv1.ScanISOsResponse {
	t.Helper()
	resp, err := s.Images.ScanISOs(t.Context(), connect.NewRequest(&quarryv1.ScanISOsRequest{StoragePoolId: poolID}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

// TestISODiscoveredRealTime: an ISO copied into iso/ on a node that mounts
// the pool is in the library within two seconds, with its label and an OS
// guess, and nobody asked for a scan.
func TestISODiscoveredRealTime(t *testing.T) {
	c, p := isoCluster(t)
	path := filepath.Join(c.shared, "isos/iso/ubuntu-24.04.1-live-server-amd64.iso")
	writeISO(t, path, "Ubuntu-Server 24.04.1 LTS amd64", 3<<20)
	written := time.Now()
	im := waitImage(t, c.s, p.GetId(), "iso/ubuntu-24.04.1-live-server-amd64.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	t.Logf("visible %v after the last byte", time.Since(written).Round(time.Millisecond))
	if im.GetKind() != quarryv1.ImageKind_IMAGE_KIND_ISO || im.GetSizeBytes() != 3<<20 || im.GetVolumeLabel() != "Ubuntu-Server 24.04.1 LTS amd64" ||
		!im.GetBootable() || osWordsOf(im) != "ubuntu 24.04 amd64" || im.GetOrigin() != "discovered" || im.GetStoragePoolName() != "isos" {
		t.Errorf("image %v", im)
	}
}

func osWordsOf(im *quarryv1.Image) string {
	return strings.Join(strings.Fields(im.GetOs().GetDistro()+" "+im.GetOs().GetVersion()+" "+im.GetOs().GetArch()), " ")
}

// TestISOWrittenSlowly: a large ISO written slowly is not registered before
// its last byte, even by scans asked for meanwhile, and is within 2 s after.
// The writer pauses longer than the settle time, so the file's age alone
// would let it through: only the node's knowledge that the file is still
// open for writing keeps it out.
func TestISOWrittenSlowly(t *testing.T) {
	const settle = 200 * time.Millisecond
	c, p := isoCluster(t, quarrytest.WithScans(time.Hour, -1, settle))
	path := filepath.Join(c.shared, "isos/iso/slow.iso")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	img := isotest.Image{Label: "Debian 12.5.0 amd64 n", Size: 16 << 20}
	header := img.Header()
	if _, err := f.Write(header); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 2<<20)
	for written := int64(len(header)); written < img.Size; {
		n := min(int64(len(chunk)), img.Size-written)
		if _, err := f.Write(chunk[:n]); err != nil {
			t.Fatal(err)
		}
		written += n
		time.Sleep(2 * settle) // the copy is slow: this is the scenario, not a wait for something
		r := scan(t, c.s, p.GetId())
		if r.GetResults()[0].GetDeferredCount() != 1 || r.GetDiscoveredCount() != 0 {
			t.Fatalf("scan during the copy: %v", r.GetResults()[0])
		}
		if im, ok := images(t, c.s, p.GetId())["iso/slow.iso"]; ok {
			t.Fatalf("registered after %d of %d bytes: %v", written, img.Size, im)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	im := waitImage(t, c.s, p.GetId(), "iso/slow.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	t.Logf("visible %v after close", time.Since(closed).Round(time.Millisecond))
	if im.GetSizeBytes() != uint64(img.Size) || osWordsOf(im) != "debian 12 amd64" {
		t.Errorf("image %v", im)
	}
}

// TestISOLifecycle: nested directories, rename, delete, re-appear.
func TestISOLifecycle(t *testing.T) {
	c, p := isoCluster(t)
	dir := filepath.Join(c.shared, "isos/iso")
	writeISO(t, filepath.Join(dir, "a/b/rocky.iso"), "Rocky-9-4-x86_64-dvd", 1<<20)
	writeISO(t, filepath.Join(dir, "alma.ISO"), "AlmaLinux-9-4-x86_64-dvd", 1<<20)
	r := scan(t, c.s, p.GetId())
	res := r.GetResults()[0]
	if res.GetNodeName() != "n1" || res.GetSkipped() {
		t.Errorf("scan result %v; want through the assigned node n1", res)
	}
	rocky := waitImage(t, c.s, p.GetId(), "iso/a/b/rocky.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	alma := waitImage(t, c.s, p.GetId(), "iso/alma.ISO", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	if osWordsOf(rocky) != "rocky 9.4 amd64" || osWordsOf(alma) != "almalinux 9.4 amd64" {
		t.Errorf("OS guesses %q, %q", osWordsOf(rocky), osWordsOf(alma))
	}

	// Rename, seen through the watch (no scan asked for): the same image
	// under the new path, nothing MISSING, nothing new.
	if err := os.Rename(filepath.Join(dir, "alma.ISO"), filepath.Join(dir, "alma-9.4.iso")); err != nil {
		t.Fatal(err)
	}
	renamed := waitImage(t, c.s, p.GetId(), "iso/alma-9.4.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	if renamed.GetId() != alma.GetId() || renamed.GetName() != "alma-9.4.iso" || renamed.GetVolumeLabel() != "AlmaLinux-9-4-x86_64-dvd" ||
		!renamed.GetCreatedAt().AsTime().Equal(alma.GetCreatedAt().AsTime()) {
		t.Errorf("renamed image %v; want image %s under its new path and name", renamed, alma.GetId())
	}
	if old, ok := images(t, c.s, p.GetId())["iso/alma.ISO"]; ok {
		t.Errorf("the old path is still an image: %v", old)
	}

	// Delete, then re-appear: the same image id, READY again.
	if err := os.Remove(filepath.Join(dir, "a/b/rocky.iso")); err != nil {
		t.Fatal(err)
	}
	waitImage(t, c.s, p.GetId(), "iso/a/b/rocky.iso", quarryv1.ImageState_IMAGE_STATE_MISSING, 2*time.Second)
	writeISO(t, filepath.Join(dir, "a/b/rocky.iso"), "Rocky-9-4-x86_64-dvd", 2<<20)
	back := waitImage(t, c.s, p.GetId(), "iso/a/b/rocky.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	if back.GetId() != rocky.GetId() || back.GetSizeBytes() != 2<<20 || back.GetMissingSince() != nil {
		t.Errorf("re-appeared image %v; want the same id %s, READY, new size", back, rocky.GetId())
	}
	if n := len(images(t, c.s, p.GetId())); n != 2 {
		t.Errorf("%d images; want 2 (rocky, alma-9.4)", n)
	}

	// A second scan of an unchanged tree changes nothing.
	r = scan(t, c.s, p.GetId())
	if res := r.GetResults()[0]; res.GetDiscoveredCount()+res.GetUpdatedCount()+res.GetMissingCount() != 0 {
		t.Errorf("rescan of an unchanged tree: %v", res)
	}
}

// TestISOScanScenarios runs DESIGN.md scenarios 5–8 for ISO scans.
func TestISOScanScenarios(t *testing.T) {
	c, shared := isoCluster(t)
	mkdir(t, c.agents["n2"].Opts.LocalPath("/srv/unassigned"))
	unassigned := c.createPool(t, "unassigned", "/srv/unassigned", false)
	nowhere := c.createPool(t, "nowhere", "/srv/nowhere", false, "n3")
	c.waitMounts(t, unassigned.GetId(), map[string]bool{"n2": true})
	writeISO(t, filepath.Join(c.shared, "isos/iso/x.iso"), "X", 64<<10)
	writeISO(t, c.agents["n2"].Opts.LocalPath("/srv/unassigned/iso/y.iso"), "Y", 64<<10)

	byPool := func(r *quarryv1.ScanISOsResponse) map[string]*quarryv1.PoolScanResult {
		out := map[string]*quarryv1.PoolScanResult{}
		for _, p := range r.GetResults() {
			out[p.GetStoragePoolName()] = p
		}
		return out
	}
	all := byPool(scan(t, c.s, ""))
	if r := all["isos"]; r.GetNodeName() != "n1" {
		t.Errorf("5: shared pool with its assigned node up scanned through %q; want n1", r.GetNodeName())
	}
	if r := all["unassigned"]; r.GetNodeName() != "n2" {
		t.Errorf("7: pool without assigned nodes scanned through %q; want n2, the node that mounts it", r.GetNodeName())
	}
	if r := all["nowhere"]; !r.GetSkipped() || !strings.Contains(r.GetSkipReason(), `no node can reach pool "nowhere"`) ||
		!strings.Contains(r.GetSkipReason(), "path /srv/nowhere does not exist on this node") {
		t.Errorf("8: unreachable pool: %v; want skipped with the reason", r)
	}

	c.agents["n1"].Stop()
	waitState(t, c.s, c.ids["n1"], quarryv1.NodeState_NODE_STATE_UNREACHABLE, 10*time.Second)
	writeISO(t, filepath.Join(c.shared, "isos/iso/z.iso"), "Z", 64<<10)
	r := scan(t, c.s, shared.GetId()).GetResults()[0]
	if r.GetNodeName() != "n2" || r.GetSkipped() {
		t.Errorf("6: assigned node down: scanned through %q (%v); want n2, which mounts the shared pool", r.GetNodeName(), r)
	}
	waitImage(t, c.s, shared.GetId(), "iso/z.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	if im := images(t, c.s, shared.GetId())["iso/x.iso"]; im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY {
		t.Errorf("x.iso is %v after scanning through another node; want READY (never MISSING)", im.GetState())
	}
	_ = nowhere
}

// TestISOIDsSurviveRestart: a control-plane restart keeps every image id,
// and the startup scan finds what arrived while it was down.
func TestISOIDsSurviveRestart(t *testing.T) {
	c, p := isoCluster(t)
	writeISO(t, filepath.Join(c.shared, "isos/iso/one.iso"), "One", 64<<10)
	before := waitImage(t, c.s, p.GetId(), "iso/one.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)

	c.s.Stop()
	writeISO(t, filepath.Join(c.shared, "isos/iso/two.iso"), "Two", 64<<10)
	s := quarrytest.StartServer(t, quarrytest.WithDataDir(c.s.DataDir), quarrytest.WithScans(200*time.Millisecond, -1, 500*time.Millisecond))
	two := waitImage(t, s, p.GetId(), "iso/two.iso", quarryv1.ImageState_IMAGE_STATE_READY, 10*time.Second)
	after := images(t, s, p.GetId())
	if after["iso/one.iso"].GetId() != before.GetId() || len(after) != 2 {
		t.Errorf("after restart: %v; want one.iso with id %s, and two.iso", after, before.GetId())
	}
	_ = two
}

// TestDeleteImage removes the file through a node, then the record; a
// MISSING image has only its record removed.
func TestDeleteImage(t *testing.T) {
	c, p := isoCluster(t)
	path := filepath.Join(c.shared, "isos/iso/del.iso")
	writeISO(t, path, "Del", 64<<10)
	im := waitImage(t, c.s, p.GetId(), "iso/del.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	if _, err := c.s.Images.DeleteImage(t.Context(), connect.NewRequest(&quarryv1.DeleteImageRequest{Id: im.GetId()})); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("file still there: %v", err)
	}
	if _, ok := images(t, c.s, p.GetId())["iso/del.iso"]; ok {
		t.Errorf("record still there")
	}
	_, err := c.s.Images.GetImage(t.Context(), connect.NewRequest(&quarryv1.GetImageRequest{Id: im.GetId()}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("GetImage after delete: %v; want not_found", err)
	}

	writeISO(t, filepath.Join(c.shared, "isos/iso/gone.iso"), "Gone", 64<<10)
	waitImage(t, c.s, p.GetId(), "iso/gone.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	if err := os.Remove(filepath.Join(c.shared, "isos/iso/gone.iso")); err != nil {
		t.Fatal(err)
	}
	missing := waitImage(t, c.s, p.GetId(), "iso/gone.iso", quarryv1.ImageState_IMAGE_STATE_MISSING, 2*time.Second)
	if _, err := c.s.Images.DeleteImage(t.Context(), connect.NewRequest(&quarryv1.DeleteImageRequest{Id: missing.GetId()})); err != nil {
		t.Fatalf("deleting a MISSING image: %v", err)
	}
	if n := len(images(t, c.s, p.GetId())); n != 0 {
		t.Errorf("%d images left", n)
	}
}

// TestISOScanCLI: `quarry image scan` prints per pool the node used and
// the counts, or why a pool was skipped, and the total; `image ls` and
// `image show` show the new ISO; scan status reports the last results.
func TestISOScanCLI(t *testing.T) {
	c, _ := isoCluster(t)
	c.createPool(t, "nowhere", "/srv/nowhere", false, "n3")
	useToken(c.s.URL, c.s.AdminToken)
	writeISO(t, filepath.Join(c.shared, "isos/iso/a.iso"), "Fedora-S-dvd-x86_64-40", 64<<10)
	writeISO(t, filepath.Join(c.shared, "isos/iso/b.iso"), "openSUSE-Leap-15.6-DVD-x86_64", 64<<10)

	// Event scans may have registered the files already: the table must
	// name the node and the skipped pool's reason either way.
	out := mustQuarry(t, c.s.URL, "image", "scan")
	for _, want := range []string{"POOL", "isos", "n1", "nowhere", "no node can reach pool \"nowhere\"", "does not exist on this node"} {
		if !strings.Contains(out, want) {
			t.Errorf("image scan output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "No new ISOs found.") && !strings.Contains(out, "No new ISOs yet") && !strings.Contains(out, "Discovered") {
		t.Errorf("image scan output lacks the total:\n%s", out)
	}
	writeISO(t, filepath.Join(c.shared, "isos/iso/deep/c.iso"), "Debian 13.0.0 amd64 n", 64<<10)
	writeISO(t, filepath.Join(c.shared, "isos/iso/deep/d.iso"), "CentOS-Stream-10-BaseOS-x86_64", 64<<10)
	out = mustQuarry(t, c.s.URL, "image", "scan", "--pool", "isos")
	if !strings.Contains(out, "Discovered 2 new ISOs") && !strings.Contains(out, "No new ISOs") {
		t.Errorf("image scan --pool isos:\n%s", out)
	}
	quarrytest.Eventually(t, 2*time.Second, func() error {
		ls := mustQuarry(t, c.s.URL, "image", "ls", "--pool", "isos", "--kind", "iso")
		for _, want := range []string{"fedora 40 amd64", "opensuse-leap 15.6 amd64", "debian 13 amd64", "centos-stream 10 amd64"} {
			if !strings.Contains(ls, want) {
				return fmt.Errorf("image ls lacks %q:\n%s", want, ls)
			}
		}
		return nil
	})
	show := mustQuarry(t, c.s.URL, "image", "show", "c.iso")
	for _, want := range []string{"iso/deep/c.iso", "Debian 13.0.0 amd64 n", "READY", "Bootable:"} {
		if !strings.Contains(show, want) {
			t.Errorf("image show lacks %q:\n%s", want, show)
		}
	}
	st, err := c.s.Images.GetScanStatus(t.Context(), connect.NewRequest(&quarryv1.GetScanStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if st.Msg.GetPoolsTotal() != 2 || len(st.Msg.GetLast()) != 2 {
		t.Errorf("scan status: %v; want 2 pools with a last result each", st.Msg)
	}
	if r := quarry(t, c.s.URL, "image", "ls", "--kind", "floppy"); r.code != 2 || !strings.Contains(r.stderr, "use iso, cloud-image or disk") {
		t.Errorf("bad --kind: %+v", r)
	}
}

// TestISOPeriodicScan: scans also run after the start delay and then on the
// interval, with nobody asking (they find what no node saw written, such as
// files another host put on a shared filesystem).
func TestISOPeriodicScan(t *testing.T) {
	c, p := isoCluster(t, quarrytest.WithScans(200*time.Millisecond, 300*time.Millisecond, time.Millisecond))
	writeISO(t, filepath.Join(c.shared, "isos/iso/p.iso"), "P", 64<<10)
	waitImage(t, c.s, p.GetId(), "iso/p.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	quarrytest.Eventually(t, 5*time.Second, func() error {
		st, err := c.s.Images.GetScanStatus(t.Context(), connect.NewRequest(&quarryv1.GetScanStatusRequest{}))
		if err != nil {
			return err
		}
		for _, r := range st.Msg.GetLast() {
			if r.GetTrigger() == "periodic" && r.GetStoragePoolName() == "isos" {
				return nil
			}
		}
		return fmt.Errorf("no periodic scan yet: %v", st.Msg.GetLast())
	})
}

// TestISOMoveDetection: an ISO moved into a subdirectory keeps its image
// (id, metadata, history) under the new path; a deleted ISO and an
// unrelated new one of the same size stay two images, the old one MISSING.
func TestISOMoveDetection(t *testing.T) {
	c, p := isoCluster(t)
	dir := filepath.Join(c.shared, "isos/iso")
	writeISO(t, filepath.Join(dir, "debian-12.7.0-amd64-netinst.iso"), "Debian 12.7.0 amd64 n", 1<<20)
	writeISO(t, filepath.Join(dir, "old.iso"), "OLD_INSTALLER", 1<<20)
	scan(t, c.s, p.GetId())
	debian := waitImage(t, c.s, p.GetId(), "iso/debian-12.7.0-amd64-netinst.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	old := waitImage(t, c.s, p.GetId(), "iso/old.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)

	// Into a subdirectory made for it.
	if err := os.MkdirAll(filepath.Join(dir, "debian/12"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "debian-12.7.0-amd64-netinst.iso"), filepath.Join(dir, "debian/12/netinst.iso")); err != nil {
		t.Fatal(err)
	}
	r := scan(t, c.s, p.GetId()).GetResults()[0]
	moved := waitImage(t, c.s, p.GetId(), "iso/debian/12/netinst.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	if moved.GetId() != debian.GetId() || moved.GetVolumeLabel() != "Debian 12.7.0 amd64 n" || moved.GetOs().GetDistro() != "debian" {
		t.Errorf("moved image %v; want image %s with its label and OS", moved, debian.GetId())
	}
	if r.GetDiscoveredCount() != 0 || r.GetMissingCount() != 0 {
		t.Errorf("scan after the move %v; want nothing new, nothing missing", r)
	}

	// Delete one, add an unrelated file of the same size: two images.
	if err := os.Remove(filepath.Join(dir, "old.iso")); err != nil {
		t.Fatal(err)
	}
	writeISO(t, filepath.Join(dir, "new.iso"), "NEW_INSTALLER", 1<<20)
	scan(t, c.s, p.GetId())
	gone := waitImage(t, c.s, p.GetId(), "iso/old.iso", quarryv1.ImageState_IMAGE_STATE_MISSING, 2*time.Second)
	added := waitImage(t, c.s, p.GetId(), "iso/new.iso", quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
	if gone.GetId() != old.GetId() || added.GetId() == old.GetId() || added.GetVolumeLabel() != "NEW_INSTALLER" {
		t.Errorf("old %v, new %v; want the old image MISSING and a new one", gone, added)
	}
	if n := len(images(t, c.s, p.GetId())); n != 3 {
		t.Errorf("%d images; want 3 (netinst, old MISSING, new)", n)
	}
	// The job history of the moved image is its own still: it is found by id.
	got, err := c.s.Images.GetImage(t.Context(), connect.NewRequest(&quarryv1.GetImageRequest{Id: debian.GetId()}))
	if err != nil || got.Msg.GetImage().GetPath() != "iso/debian/12/netinst.iso" {
		t.Errorf("GetImage(%s) = %v, %v", debian.GetId(), got, err)
	}
}

// TestDownloadedImageMoved: a downloaded image whose file is moved inside
// images/ keeps its id, digest and job history under the new path; the
// scans learn the file's own modification time first (a download records
// when it ended).
func TestDownloadedImageMoved(t *testing.T) {
	c, p := isoCluster(t)
	o := origintest.New(t)
	f := o.Add("/noble.qcow2", origintest.QCOW2(2*mib, 1<<30, 3))
	m := download(t, c.s, p.GetId(), f.URL(), "sha256:"+f.SHA256())
	if j := waitJob(t, c.s, m.GetJob().GetId(), 20*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("download %v", j)
	}
	scan(t, c.s, p.GetId()) // learns the file's time
	dir := filepath.Join(c.shared, "isos/images")
	mkdir(t, filepath.Join(dir, "ubuntu"))
	if err := os.Rename(filepath.Join(dir, "noble.qcow2"), filepath.Join(dir, "ubuntu/noble.qcow2")); err != nil {
		t.Fatal(err)
	}
	r := scan(t, c.s, p.GetId()).GetResults()[0]
	if r.GetMovedCount() != 1 || r.GetMissingCount() != 0 {
		t.Errorf("scan %v; want 1 moved, nothing missing", r)
	}
	im := getImage(t, c.s, m.GetImage().GetId())
	if im.GetPath() != "images/ubuntu/noble.qcow2" || im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY ||
		im.GetDigest() != "sha256:"+f.SHA256() || im.GetFormat() != "qcow2" || im.GetOrigin() != "downloaded" {
		t.Errorf("moved image %v; want it READY at images/ubuntu/noble.qcow2 with its digest", im)
	}
	if n := len(images(t, c.s, p.GetId())); n != 1 {
		t.Errorf("%d images; want 1", n)
	}
}

// TestStoppedAgentShownAtOnce: when a node's agent stops, the control
// plane's connection to it breaks and the node is checked at once: the API
// shows it UNREACHABLE long before its next scheduled check (a minute
// here).
func TestStoppedAgentShownAtOnce(t *testing.T) {
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(time.Minute))
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	mkdir(t, a.Opts.LocalPath("/srv/isos"))
	created, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "isos", Path: "/srv/isos", AssignedNodeIds: []string{a.NodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	// Discovered with no scan and without waiting for the minute: the
	// agent announces its file events, and the control plane collects them.
	writeISO(t, a.Opts.LocalPath("/srv/isos/iso/a.iso"), "A", 1<<20)
	waitImage(t, s, created.Msg.GetPool().GetId(), "iso/a.iso", quarryv1.ImageState_IMAGE_STATE_READY, 10*time.Second)

	stopped := time.Now()
	a.Stop()
	quarrytest.Eventually(t, 20*time.Second, func() error {
		n, err := s.Nodes.GetNode(t.Context(), connect.NewRequest(&quarryv1.GetNodeRequest{Id: a.NodeID}))
		if err != nil {
			return err
		}
		if st := n.Msg.GetNode().GetState(); st != quarryv1.NodeState_NODE_STATE_UNREACHABLE {
			return fmt.Errorf("node is %v", st)
		}
		return nil
	})
	t.Logf("UNREACHABLE %v after its agent stopped (health interval 1m)", time.Since(stopped).Round(time.Millisecond))
}

// TestPoolCreatedOverISOs: a pool created on a directory that already
// holds ISOs has them in the library without a scan being asked for or
// due: the node starts to watch the pool and tells the control plane to
// scan what it held before.
func TestPoolCreatedOverISOs(t *testing.T) {
	c := newCluster(t, quarrytest.WithScans(time.Hour, -1, 500*time.Millisecond))
	writeISO(t, filepath.Join(c.shared, "isos/iso/before.iso"), "BEFORE", 1<<20)
	old := time.Now().Add(-time.Hour) // long settled
	if err := os.Chtimes(filepath.Join(c.shared, "isos/iso/before.iso"), old, old); err != nil {
		t.Fatal(err)
	}
	p := c.createPool(t, "isos", "/srv/nfs/isos", true, "n1")
	waitImage(t, c.s, p.GetId(), "iso/before.iso", quarryv1.ImageState_IMAGE_STATE_READY, 5*time.Second)
}
