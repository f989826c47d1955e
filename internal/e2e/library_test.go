package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
)

// TestISOLinkedIn: an ISO added with ln (a hard link) or ln -s (a link
// inside the pool) is complete as it appears — nobody has it open for
// writing — and is discovered in real time like a copied one; a scan does
// not keep deferring it. A symbolic link that leaves the pool stays
// refused.
func TestISOLinkedIn(t *testing.T) {
	c, p := isoCluster(t)
	pool := filepath.Join(c.shared, "isos")
	src := filepath.Join(pool, "stash/debian.iso")
	writeISO(t, src, "Debian 12.5.0 amd64 n", 1<<20)
	outside := filepath.Join(t.TempDir(), "outside.iso")
	writeISO(t, outside, "Fedora-S-dvd-x86_64-40", 1<<20)
	time.Sleep(600 * time.Millisecond) // older than the settle time, like any ISO one links

	if err := os.Link(src, filepath.Join(pool, "iso/hard.iso")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../stash/debian.iso", filepath.Join(pool, "iso/soft.iso")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(pool, "iso/escape.iso")); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"iso/hard.iso", "iso/soft.iso"} {
		im := waitImage(t, c.s, p.GetId(), rel, quarryv1.ImageState_IMAGE_STATE_READY, 2*time.Second)
		if im.GetVolumeLabel() != "Debian 12.5.0 amd64 n" || im.GetSizeBytes() != 1<<20 {
			t.Errorf("%s: %v", rel, im)
		}
	}
	res := scan(t, c.s, p.GetId()).GetResults()[0]
	if res.GetDeferredCount() != 0 {
		t.Errorf("scan after the links appeared: %v; want nothing deferred", res)
	}
	if im, ok := images(t, c.s, p.GetId())["iso/escape.iso"]; ok {
		t.Errorf("a link leaving the pool was registered: %v", im)
	}
}

// TestISOScanCLIWaiting: while a file is still being written, image scan
// does not claim there is nothing new: it says the file waits, and where.
func TestISOScanCLIWaiting(t *testing.T) {
	c, _ := isoCluster(t)
	useToken(c.s.URL, c.s.AdminToken)
	f, err := os.Create(filepath.Join(c.shared, "isos/iso/copying.iso"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	out := mustQuarry(t, c.s.URL, "image", "scan", "--pool", "isos")
	want := "No new ISOs yet; 1 file is still being written (pool isos)"
	if !strings.Contains(out, want) || strings.Contains(out, "No new ISOs found") {
		t.Errorf("image scan while a file is written:\n%s\nwant %q", out, want)
	}
}

// localPool is pool "local" at /srv/local on n1 of a new cluster.
func localPool(t *testing.T, c *cluster) *quarryv1.StoragePool {
	t.Helper()
	mkdir(t, c.agents["n1"].Opts.LocalPath("/srv/local"))
	p := c.createPool(t, "local", "/srv/local", false, "n1")
	c.waitMounts(t, p.GetId(), map[string]bool{"n1": true})
	return p
}

// TestDownloadVerifiedOnlyAgainstAChecksum: a download without an expected
// checksum is hashed, not verified, and says so in its job message; the
// image records whether its digest was checked (API, image ls, image show).
func TestDownloadVerifiedOnlyAgainstAChecksum(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	plain := o.Add("/plain.raw", origintest.Random(mib, 21))
	pinned := o.Add("/pinned.raw", origintest.Random(mib, 22))
	p := localPool(t, c)

	m := download(t, c.s, p.GetId(), plain.URL(), "")
	j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	if want := "hashed (no expected checksum given): sha256:" + plain.SHA256(); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED ||
		!strings.Contains(j.GetMessage(), want) || strings.Contains(j.GetMessage(), "verified") {
		t.Errorf("job without a checksum: %v; want SUCCEEDED saying %q", j, want)
	}
	if im := getImage(t, c.s, m.GetImage().GetId()); im.GetVerified() || im.GetDigest() != "sha256:"+plain.SHA256() {
		t.Errorf("image without a checksum: %v; want its digest, verified false", im)
	}

	m2 := download(t, c.s, p.GetId(), pinned.URL(), "sha256:"+pinned.SHA256())
	j2 := waitJob(t, c.s, m2.GetJob().GetId(), 30*time.Second)
	if !strings.Contains(j2.GetMessage(), "verified: sha256:"+pinned.SHA256()) {
		t.Errorf("job with a checksum: %v", j2)
	}
	if im := getImage(t, c.s, m2.GetImage().GetId()); !im.GetVerified() {
		t.Errorf("image with a checksum: %v; want verified", im)
	}

	useToken(c.s.URL, c.s.AdminToken)
	ls := mustQuarry(t, c.s.URL, "image", "ls", "--pool", "local")
	if row := tableRow(ls, "plain.raw"); !slices.Contains(row, "no") {
		t.Errorf("image ls row of plain.raw %q; want verified no:\n%s", row, ls)
	}
	if row := tableRow(ls, "pinned.raw"); !slices.Contains(row, "yes") {
		t.Errorf("image ls row of pinned.raw %q; want verified yes:\n%s", row, ls)
	}
	if show := mustQuarry(t, c.s.URL, "image", "show", "plain.raw"); !strings.Contains(show, "no expected checksum was given") {
		t.Errorf("image show plain.raw:\n%s", show)
	}
}

// TestDownloadAfterFailureReplacesName: a failed download leaves an ERROR
// record, but it does not block the name: a new download of the same name
// replaces it (the failed job keeps its history). A name held by any other
// image is refused with how to clear it.
func TestDownloadAfterFailureReplacesName(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	good := o.Add("/good.raw", origintest.Random(mib, 31))
	p := localPool(t, c)
	named := func(url string) (*quarryv1.DownloadImageResponse, error) {
		resp, err := c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{
			Url: url, StoragePoolId: p.GetId(), Name: "mine.raw"}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}

	failed, err := named(o.URL("/gone.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, c.s, failed.GetJob().GetId(), 30*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_FAILED {
		t.Fatalf("download of a 404: %v; want FAILED", j)
	}
	if im := getImage(t, c.s, failed.GetImage().GetId()); im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR {
		t.Fatalf("image of the failed download: %v; want ERROR", im)
	}

	again, err := named(good.URL())
	if err != nil {
		t.Fatalf("downloading mine.raw again after a failure: %v", err)
	}
	if j := waitJob(t, c.s, again.GetJob().GetId(), 30*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("second download: %v", j)
	}
	if im := images(t, c.s, p.GetId())["images/mine.raw"]; im.GetId() != again.GetImage().GetId() ||
		im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY {
		t.Errorf("images/mine.raw is %v; want the new READY image", im)
	}
	if _, err := c.s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: failed.GetJob().GetId()})); err != nil {
		t.Errorf("the failed job is gone: %v", err)
	}

	_, err = named(o.URL("/other.raw"))
	if connect.CodeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), "quarry image rm "+again.GetImage().GetId()) ||
		!strings.Contains(err.Error(), "READY") {
		t.Errorf("download over a READY image: %v; want already_exists saying how to clear it", err)
	}
}

// TestCloudImageReconciled: a scan reconciles the cloud images in images/
// with the disk, like ISOs: a vanished file turns MISSING (metadata kept),
// back unchanged it is READY again; a file whose size changed is ERROR
// "file changed on disk since it was verified" until a verify job re-hashes
// it on a node and finds the recorded digest; a verify that finds another
// digest leaves it ERROR naming both. An image a download is writing is
// never marked MISSING.
func TestCloudImageReconciled(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/disk2.raw", origintest.Random(2*mib, 41))
	p := localPool(t, c)
	m := download(t, c.s, p.GetId(), f.URL(), "sha256:"+f.SHA256())
	if j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("download: %v", j)
	}
	id := m.GetImage().GetId()
	file := c.agents["n1"].Opts.LocalPath("/srv/local/images/disk2.raw")
	original, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	scanned := func() *quarryv1.Image {
		t.Helper()
		scan(t, c.s, p.GetId())
		return getImage(t, c.s, id)
	}

	// Vanished → MISSING, metadata kept.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if im := scanned(); im.GetState() != quarryv1.ImageState_IMAGE_STATE_MISSING || im.GetDigest() != "sha256:"+f.SHA256() ||
		!im.GetVerified() || im.GetMissingSince() == nil {
		t.Fatalf("after the file vanished: %v; want MISSING with its digest", im)
	}
	// Back unchanged → READY, same id.
	if err := os.WriteFile(file, original, 0o644); err != nil {
		t.Fatal(err)
	}
	if im := scanned(); im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetMissingSince() != nil {
		t.Fatalf("after the file came back: %v; want READY", im)
	}
	// Changed size → ERROR until re-verified; putting the size back does
	// not clear it: only a verify does.
	if err := os.WriteFile(file, append(original, "more"...), 0o644); err != nil {
		t.Fatal(err)
	}
	useToken(c.s.URL, c.s.AdminToken)
	if out := mustQuarry(t, c.s.URL, "image", "scan", "--pool", "local"); !strings.Contains(out, "1 image(s) changed on disk since verified") {
		t.Errorf("image scan after the file grew:\n%s", out)
	}
	if im := getImage(t, c.s, id); im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR ||
		!strings.Contains(im.GetStateReason(), "file changed on disk since it was verified") {
		t.Fatalf("after the file grew: %v; want ERROR, changed on disk", im)
	}
	verifyJob := func() *quarryv1.Job {
		t.Helper()
		resp, err := c.s.Images.VerifyImage(t.Context(), connect.NewRequest(&quarryv1.VerifyImageRequest{Id: id}))
		if err != nil {
			t.Fatalf("VerifyImage: %v", err)
		}
		if k := resp.Msg.GetJob().GetKind(); k != "verify" {
			t.Errorf("job kind %q; want verify", k)
		}
		return waitJob(t, c.s, resp.Msg.GetJob().GetId(), 30*time.Second)
	}
	j := verifyJob()
	if j.GetState() != quarryv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), "sha256:"+f.SHA256()) || j.GetNodeName() != "n1" {
		t.Errorf("verify of the grown file: %v; want FAILED on n1 naming the recorded digest", j)
	}
	if im := getImage(t, c.s, id); im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR ||
		!strings.Contains(im.GetStateReason(), "recorded sha256:"+f.SHA256()) || strings.Count(im.GetStateReason(), "sha256:") != 2 {
		t.Errorf("image after a failed verify: %v; want ERROR naming both digests", im)
	}
	if err := os.WriteFile(file, original, 0o644); err != nil {
		t.Fatal(err)
	}
	if im := scanned(); im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR {
		t.Errorf("a scan after the file was restored: %v; want still ERROR until verified", im)
	}
	out := mustQuarry(t, c.s.URL, "image", "verify", "disk2.raw", "--wait")
	if !strings.Contains(out, "matches the recorded digest") {
		t.Errorf("image verify --wait:\n%s", out)
	}
	if im := getImage(t, c.s, id); im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetStateReason() != "" {
		t.Errorf("after a verify that matched: %v; want READY", im)
	}
	jobs, err := c.s.Jobs.ListJobs(t.Context(), connect.NewRequest(&quarryv1.ListJobsRequest{StoragePoolId: p.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if last := jobs.Msg.GetJobs()[0]; last.GetKind() != "verify" || last.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED ||
		last.GetProgress().GetBytesDone() != 2*mib || last.GetProgress().GetBytesTotal() != 2*mib {
		t.Errorf("the verify job: %v; want SUCCEEDED, 2 MiB of 2 MiB hashed", last)
	}

	// An image being downloaded is never MISSING, however often one scans.
	slow := o.Add("/slow.raw", origintest.Random(4*mib, 42))
	slow.RateLimit(mib)
	d := download(t, c.s, p.GetId(), slow.URL(), "")
	for range 3 {
		if im := scanned(); im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY {
			t.Errorf("disk2.raw during another download: %v", im)
		}
		if im := getImage(t, c.s, d.GetImage().GetId()); im.GetState() == quarryv1.ImageState_IMAGE_STATE_MISSING {
			t.Fatalf("an image being downloaded was marked MISSING: %v", im)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestVerifyCancel: a verify job can be cancelled while its node hashes;
// it ends CANCELLED at once and the image keeps its state.
func TestVerifyCancel(t *testing.T) {
	c := newCluster(t)
	o := origintest.New(t)
	f := o.Add("/big.raw", origintest.Random(mib, 51))
	p := localPool(t, c)
	m := download(t, c.s, p.GetId(), f.URL(), "sha256:"+f.SHA256())
	if j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("download: %v", j)
	}
	// A large sparse file takes the node a while to hash.
	if err := os.Truncate(c.agents["n1"].Opts.LocalPath("/srv/local/images/big.raw"), 64<<30); err != nil {
		t.Fatal(err)
	}
	scan(t, c.s, p.GetId())
	resp, err := c.s.Images.VerifyImage(t.Context(), connect.NewRequest(&quarryv1.VerifyImageRequest{Id: m.GetImage().GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Msg.GetJob().GetId()
	waitProgress(t, c.s, id, 1)
	if _, err := c.s.Jobs.CancelJob(t.Context(), connect.NewRequest(&quarryv1.CancelJobRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, c.s, id, 5*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_CANCELLED {
		t.Errorf("verify job after a cancel: %v", j)
	}
	if im := getImage(t, c.s, m.GetImage().GetId()); im.GetState() != quarryv1.ImageState_IMAGE_STATE_ERROR {
		t.Errorf("image after a cancelled verify: %v; want still ERROR", im)
	}
}
