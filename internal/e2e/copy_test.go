package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// copyCluster is three agents, each with its own disk, whose copies to
// other nodes are served at rate bytes a second, so a test can act in the
// middle of one; failed attempts are retried after 100 ms.
func copyCluster(t *testing.T, rate int64, opts ...quarrytest.ServerOption) *cluster {
	return copyClusterOf(t, []string{"n1", "n2", "n3"}, rate, opts...)
}

// copyClusterOf is copyCluster with the given nodes.
func copyClusterOf(t *testing.T, nodes []string, rate int64, opts ...quarrytest.ServerOption) *cluster {
	t.Helper()
	opts = append([]quarrytest.ServerOption{quarrytest.WithDownloadRetries(0, 100*time.Millisecond), quarrytest.WithHealthInterval(500 * time.Millisecond)}, opts...)
	c := &cluster{
		s:      quarrytest.StartServer(t, opts...),
		agents: map[string]*quarrytest.Agent{},
		ids:    map[string]string{},
	}
	for _, name := range nodes {
		a := quarrytest.StartAgent(t, c.s, quarrytest.AgentOptions{Name: name, PeerReadRate: rate})
		c.agents[name], c.ids[name] = a, a.NodeID
	}
	for _, id := range c.ids {
		waitState(t, c.s, id, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	}
	return c
}

// localPoolOn creates a pool at path on node's own disk, assigned to it.
func (c *cluster) localPoolOn(t *testing.T, name, path, node string) *quarryv1.StoragePool {
	t.Helper()
	mkdir(t, c.agents[node].Opts.LocalPath(path))
	p := c.createPool(t, name, path, false, node)
	c.waitMounts(t, p.GetId(), map[string]bool{node: true})
	return p
}

// readyImage downloads f into the pool and waits until it is READY.
func readyImage(t *testing.T, c *cluster, pool *quarryv1.StoragePool, f *origintest.File) *quarryv1.Image {
	t.Helper()
	m := download(t, c.s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	if j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("download into %s: %v", pool.GetName(), j)
	}
	return getImage(t, c.s, m.GetImage().GetId())
}

func copyImage(t *testing.T, s *quarrytest.Server, imageID, poolID, name string) *quarryv1.CopyImageResponse {
	t.Helper()
	resp, err := s.Images.CopyImage(t.Context(), connect.NewRequest(&quarryv1.CopyImageRequest{ImageId: imageID, StoragePoolId: poolID, Name: name}))
	if err != nil {
		t.Fatalf("CopyImage: %v", err)
	}
	return resp.Msg
}

// sameContent fails unless the file at path holds want's bytes.
func sameContent(t *testing.T, path string, want *origintest.File) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var exp bytes.Buffer
	if _, err := io.Copy(&exp, io.NewSectionReader(want.Content(), 0, want.Content().Size)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, exp.Bytes()) {
		t.Fatalf("%s: %d bytes differ from the source's %d", path, len(got), exp.Len())
	}
}

func hasHistory(j *quarryv1.Job, frag string) bool {
	for _, h := range historyOf(j) {
		if strings.Contains(h, frag) {
			return true
		}
	}
	return false
}

// TestCopyLocal: both pools on one node: the copy is made on that node
// (reflink where the filesystem shares extents, else copy_file_range),
// verified, and READY with the source's digest and format; the origin is
// not asked again.
func TestCopyLocal(t *testing.T) {
	c := copyClusterOf(t, []string{"n1"}, 0)
	o := origintest.New(t)
	f := o.Add("/disk.qcow2", origintest.QCOW2(6*mib, 2<<30, 7))
	a := c.localPoolOn(t, "a", "/srv/a", "n1")
	b := c.localPoolOn(t, "b", "/srv/b", "n1")
	src := readyImage(t, c, a, f)
	served := f.BytesServed()

	m := copyImage(t, c.s, src.GetId(), b.GetId(), "")
	if m.GetJob().GetKind() != "copy" || m.GetImage().GetState() != quarryv1.ImageState_IMAGE_STATE_PENDING || m.GetImage().GetName() != src.GetName() {
		t.Fatalf("CopyImage = %v; want a PENDING image named like the source and a copy job", m)
	}
	if again := copyImage(t, c.s, src.GetId(), b.GetId(), ""); !again.GetExisting() || again.GetJob().GetId() != m.GetJob().GetId() {
		t.Errorf("asking again while it runs: %v; want the same job", again)
	}
	j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() != "n1" || !strings.Contains(j.GetMessage(), "locally with ") {
		t.Fatalf("job %v; want SUCCEEDED on n1, copied locally", j)
	}
	t.Logf("%s", j.GetMessage()) // says reflink or copy_file_range
	im := getImage(t, c.s, m.GetImage().GetId())
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetDigest() != src.GetDigest() || im.GetFormat() != "qcow2" ||
		im.GetVirtualSizeBytes() != 2<<30 || im.GetOrigin() != "copied" || !im.GetVerified() {
		t.Errorf("copy %v", im)
	}
	sameContent(t, filepath.Join(c.agents["n1"].Opts.LocalPath("/srv/b"), im.GetPath()), f)
	if left := entries(t, filepath.Join(c.agents["n1"].Opts.LocalPath("/srv/b"), ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}
	if f.BytesServed() != served {
		t.Errorf("the origin served %d more bytes; a copy must not fetch", f.BytesServed()-served)
	}

	// The CLI: another copy under another name, followed to its end.
	useToken(c.s.URL, c.s.AdminToken)
	r := quarry(t, c.s.URL, "image", "copy", src.GetName(), "--from-pool", "a", "--pool", "b", "--name", "cli.qcow2", "--wait")
	if r.code != 0 || !strings.Contains(r.stdout, "image cli.qcow2 is READY in pool b") || !strings.Contains(r.stdout, src.GetDigest()) {
		t.Errorf("image copy: %+v", r)
	}
	if r := quarry(t, c.s.URL, "image", "copy", src.GetName(), "--from-pool", "a", "--pool", "nope"); r.code == 0 || !strings.Contains(r.stderr, "nope") {
		t.Errorf("image copy into an unknown pool: %+v", r)
	}

	// Bad input changes nothing.
	for _, bad := range []struct {
		req  *quarryv1.CopyImageRequest
		code connect.Code
	}{
		{&quarryv1.CopyImageRequest{ImageId: src.GetId()}, connect.CodeInvalidArgument},
		{&quarryv1.CopyImageRequest{ImageId: "img-nope", StoragePoolId: b.GetId()}, connect.CodeNotFound},
		{&quarryv1.CopyImageRequest{ImageId: src.GetId(), StoragePoolId: "pool-nope"}, connect.CodeNotFound},
		{&quarryv1.CopyImageRequest{ImageId: src.GetId(), StoragePoolId: a.GetId()}, connect.CodeInvalidArgument},
		{&quarryv1.CopyImageRequest{ImageId: src.GetId(), StoragePoolId: b.GetId(), Name: "../x"}, connect.CodeInvalidArgument},
	} {
		_, err := c.s.Images.CopyImage(t.Context(), connect.NewRequest(bad.req))
		if connect.CodeOf(err) != bad.code {
			t.Errorf("CopyImage(%v) = %v; want %v", bad.req, err, bad.code)
		}
	}
	if n := len(images(t, c.s, b.GetId())); n != 2 {
		t.Errorf("pool b holds %d images after bad requests; want 2", n)
	}
}

// TestCopyAcrossNodesSourceBack: the agent process of the only node
// holding the source is killed (SIGKILL) mid-copy; the copy waits, saying
// why, and resumes from its partial file when the node is back.
func TestCopyAcrossNodesSourceBack(t *testing.T) {
	const size = 8 * mib
	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t, quarrytest.WithDownloadRetries(0, 100*time.Millisecond), quarrytest.WithHealthInterval(500*time.Millisecond))
	n1 := quarrytest.StartAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: "n1", PeerReadRate: 2 * mib})
	n2 := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n2"})
	c := &cluster{s: s, agents: map[string]*quarrytest.Agent{"n2": n2}, ids: map[string]string{"n1": n1.NodeID, "n2": n2.NodeID}}
	for _, id := range c.ids {
		waitState(t, s, id, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	}
	o := origintest.New(t)
	f := o.Add("/big.img", origintest.Random(size, 11))
	mkdir(t, n1.Opts.LocalPath("/srv/a"))
	a := c.createPool(t, "a", "/srv/a", false, "n1")
	c.waitMounts(t, a.GetId(), map[string]bool{"n1": true})
	b := c.localPoolOn(t, "b", "/srv/b", "n2")
	src := readyImage(t, c, a, f)

	m := copyImage(t, c.s, src.GetId(), b.GetId(), "moved.img")
	waitProgress(t, c.s, m.GetJob().GetId(), size/3)
	n1.Kill()
	quarrytest.Eventually(t, 20*time.Second, func() error {
		if j := getJob(t, c.s, m.GetJob().GetId()); !strings.Contains(j.GetMessage(), "can serve it now") {
			return fmt.Errorf("job message %q; want it to wait for a source", j.GetMessage())
		}
		return nil
	})
	n1.Start()
	j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() != "n2" {
		t.Fatalf("job %v\n%s", j, strings.Join(historyOf(j), "\n"))
	}
	if !hasHistory(j, "from node n1 to node n2 over mutual TLS") || !strings.Contains(j.GetMessage(), "from node n1 over mutual TLS") {
		t.Errorf("history does not say the copy came from n1 over mutual TLS:\n%s", strings.Join(historyOf(j), "\n"))
	}
	resumed := false
	for _, h := range historyOf(j) {
		resumed = resumed || (strings.Contains(h, "trying again on node n2") && !strings.HasSuffix(h, "from 0 B"))
	}
	if !resumed {
		t.Errorf("the copy did not resume from its partial file:\n%s", strings.Join(historyOf(j), "\n"))
	}
	im := getImage(t, c.s, m.GetImage().GetId())
	if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetDigest() != src.GetDigest() {
		t.Errorf("copy %v", im)
	}
	sameContent(t, filepath.Join(n2.Opts.LocalPath("/srv/b"), "images/moved.img"), f)
}

// TestCopyAcrossNodesFailsOverToAnotherSource: the node the copy reads
// from is stopped mid-copy while another node holds the same file: the
// copy goes on from that node at once and finishes while the first is
// still down. The second source is itself a download deduplicated into a
// copy (the origin serves the image once).
func TestCopyAcrossNodesFailsOverToAnotherSource(t *testing.T) {
	const size = 8 * mib
	// Served at 2 MiB/s: the source is stopped at a third, seconds before
	// the copy could end, even on a loaded machine.
	c := copyCluster(t, 2*mib)
	o := origintest.New(t)
	f := o.Add("/big.img", origintest.Random(size, 12))
	a := c.localPoolOn(t, "a", "/srv/a", "n1")
	b := c.localPoolOn(t, "b", "/srv/b", "n2")
	d := c.localPoolOn(t, "d", "/srv/d", "n3")
	src := readyImage(t, c, a, f)
	// Dedup by digest: the same URL and checksum into pool d is a copy.
	second := readyImage(t, c, d, f)
	if f.Requests() == 0 || f.BytesServed() > size+size/10 {
		t.Fatalf("the origin served %d bytes for two images of %d; the second must be a copy", f.BytesServed(), size)
	}

	m := copyImage(t, c.s, src.GetId(), b.GetId(), "")
	waitProgress(t, c.s, m.GetJob().GetId(), size/3)
	j := getJob(t, c.s, m.GetJob().GetId())
	from := "n1"
	if strings.Contains(j.GetMessage(), "from node n3") {
		from = "n3"
	}
	other := map[string]string{"n1": "n3", "n3": "n1"}[from]
	c.agents[from].Stop()
	j = waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v\n%s", j, strings.Join(historyOf(j), "\n"))
	}
	if !strings.Contains(j.GetMessage(), "from node "+other+" over mutual TLS") {
		t.Errorf("finished %q; want it from %s\n%s", j.GetMessage(), other, strings.Join(historyOf(j), "\n"))
	}
	_ = second
	sameContent(t, filepath.Join(c.agents["n2"].Opts.LocalPath("/srv/b"), "images/big.img"), f)
}

// TestPeerEndpointGrants: the peer endpoint serves a file only to another
// node of the cluster presenting a grant signed by the control plane for
// that file, from this node, to that node, not expired; and a node reaches
// nothing else on another node's agent.
func TestPeerEndpointGrants(t *testing.T) {
	c := copyClusterOf(t, []string{"n1", "n2"}, 0)
	o := origintest.New(t)
	f := o.Add("/small.img", origintest.Random(2*mib, 13))
	a := c.localPoolOn(t, "a", "/srv/a", "n1")
	src := readyImage(t, c, a, f)
	sha := strings.TrimPrefix(src.GetDigest(), "sha256:")
	cp := c.s.ControlPlaneCert(t)
	now := time.Now()
	grant := func(mod func(*pki.Grant), signer *tls.Certificate) string {
		g := pki.Grant{Source: c.ids["n1"], Grantee: c.ids["n2"], Job: "job-test", PoolID: a.GetId(), PoolName: "a", PoolPath: "/srv/a",
			Path: src.GetPath(), Size: int64(src.GetSizeBytes()), SHA256: sha, IssuedAt: now, Expires: now.Add(time.Minute)}
		if mod != nil {
			mod(&g)
		}
		tok, err := pki.SignGrant(g, signer)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	foreign, err := otherCA(t).IssueControlPlane(time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	n2 := nodeCert(t, c.s.CA, c.ids["n2"], now, time.Hour)
	get := func(cert *tls.Certificate, sum, token, rng string) (int, string) {
		tr := &http.Transport{TLSClientConfig: pki.NodeClientTLS(c.ids["n1"], c.s.CA.Pool(),
			func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+c.agents["n1"].Addr+"/peer/v1/files/"+sum, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	// The one that works: a range of the file, as a resumed copy asks.
	if code, body := get(n2, sha, grant(nil, cp), "bytes=1048576-"); code != http.StatusPartialContent || len(body) != mib {
		t.Fatalf("a valid grant with a range: %d, %d bytes; want 206 and 1 MiB", code, len(body))
	}
	for _, tt := range []struct {
		name, sum, token, why string
		cert                  *tls.Certificate
	}{
		{"no grant", sha, "", "no grant", n2},
		{"forged: signed by another CA", sha, grant(nil, foreign), "not the control plane of this cluster", n2},
		{"tampered", sha, strings.Replace(grant(nil, cp), "qg1.", "qg1.e", 1), "grant refused", n2},
		{"expired", sha, grant(func(g *pki.Grant) { g.IssuedAt, g.Expires = now.Add(-time.Hour), now.Add(-10*time.Minute) }, cp), "expired", n2},
		{"another file", strings.Repeat("0", 64), grant(nil, cp), "another file", n2},
		{"another file's grant for this path", sha, grant(func(g *pki.Grant) { g.SHA256 = strings.Repeat("1", 64) }, cp), "another file", n2},
		{"granted to another node", sha, grant(func(g *pki.Grant) { g.Grantee = "node-other" }, cp), "not the caller", n2},
		{"for another source node", sha, grant(func(g *pki.Grant) { g.Source = "node-other" }, cp), "not this one", n2},
		{"the control plane's certificate", sha, grant(nil, cp), "nodes of this cluster", cp},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(tt.cert, tt.sum, tt.token, "")
			if code != http.StatusForbidden || !strings.Contains(body, tt.why) {
				t.Errorf("answered %d %q; want 403 saying %q", code, body, tt.why)
			}
		})
	}
	t.Run("a node calling the agent API", func(t *testing.T) {
		_, err := c.s.AgentClient(t, c.ids["n1"], c.agents["n1"].Addr, n2).GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{}))
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("GetFacts with a node's certificate = %v; want forbidden", err)
		}
	})
}

// catalogWith writes a catalog file with one entry for f, whose checksum
// file is sums, and returns the server option that loads it.
func catalogWith(t *testing.T, id string, f, sums *origintest.File) quarrytest.ServerOption {
	t.Helper()
	file := filepath.Join(t.TempDir(), "catalog.json")
	b, _ := json.Marshal(map[string]any{"entries": []map[string]any{{
		"id": id, "name": "test image", "url": f.URL(), "checksumUrl": sums.URL(), "format": "raw",
		"os": map[string]string{"distro": "debian", "version": "13", "arch": "amd64"},
	}}})
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return quarrytest.WithCatalog(file)
}

// TestDedupByDigest: a download whose expected digest a READY image of the
// cluster has is served by a copy of it, whether the digest is given, in
// a checksum file or comes from the catalog: the origin never serves the
// image again, and the job's history says why it was a copy. The same
// digest in the same pool under the same name is that image.
func TestDedupByDigest(t *testing.T) {
	o := origintest.New(t)
	f := o.Add("/dl/debian.img", origintest.Random(4*mib, 21))
	sums := o.AddChecksumFile("/dl/SHA256SUMS", map[string]string{"debian.img": f.SHA256()})
	c := copyCluster(t, 0, catalogWith(t, "test-debian", f, sums))
	a := c.localPoolOn(t, "a", "/srv/a", "n1")
	b := c.localPoolOn(t, "b", "/srv/b", "n2")
	d := c.localPoolOn(t, "d", "/srv/d", "n3")
	src := readyImage(t, c, a, f)
	served := f.BytesServed()

	same := download(t, c.s, a.GetId(), f.URL(), "sha256:"+f.SHA256())
	if !same.GetAlreadyExists() || !same.GetExisting() || same.GetJob() != nil || same.GetImage().GetId() != src.GetId() {
		t.Errorf("the same digest and name in the same pool: %v; want the READY image, already_exists", same)
	}

	// Given digest, another pool on another node: a copy over mutual TLS.
	m := download(t, c.s, b.GetId(), f.URL(), "sha256:"+f.SHA256())
	if m.GetJob().GetKind() != "copy" || m.GetCopiedFromImageId() != src.GetId() {
		t.Fatalf("download into b = %v; want a copy job from %s", m, src.GetId())
	}
	j := waitJob(t, c.s, m.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || !hasHistory(j, "is already in the cluster") || !strings.Contains(j.GetMessage(), "over mutual TLS") {
		t.Errorf("job %v\n%s", j, strings.Join(historyOf(j), "\n"))
	}
	sameContent(t, filepath.Join(c.agents["n2"].Opts.LocalPath("/srv/b"), "images/debian.img"), f)

	// Digest from a checksum file, same pool under another name: the
	// control plane reads the checksum file first and copies locally.
	resp, err := c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{
		Url: f.URL(), ChecksumUrl: sums.URL(), StoragePoolId: a.GetId(), Name: "again.img"}))
	if err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, c.s, resp.Msg.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || !hasHistory(j, "is already in the cluster") || !strings.Contains(j.GetMessage(), "locally") {
		t.Errorf("checksum-file download: %v\n%s", j, strings.Join(historyOf(j), "\n"))
	}

	// Digest from the catalog (its checksum file) into a third node's pool.
	resp, err = c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{CatalogId: "test-debian", StoragePoolId: d.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, c.s, resp.Msg.GetJob().GetId(), 30*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || !hasHistory(j, "is already in the cluster") {
		t.Errorf("catalog download: %v\n%s", j, strings.Join(historyOf(j), "\n"))
	}
	if im := getImage(t, c.s, resp.Msg.GetImage().GetId()); im.GetDigest() != src.GetDigest() || im.GetOs().GetDistro() != "debian" {
		t.Errorf("catalog copy %v", im)
	}
	if f.BytesServed() != served {
		t.Errorf("the origin served the image again (%d more bytes); dedup must copy", f.BytesServed()-served)
	}
}

// TestDedupByURL: a download of a URL already being downloaded into the
// same pool joins that job, also when one was asked for by catalog id and
// the other by URL; into another pool it is a job of its own.
func TestDedupByURL(t *testing.T) {
	o := origintest.New(t)
	f := o.Add("/dl/big.img", origintest.Random(8*mib, 22))
	f.RateLimit(4 * mib)
	sums := o.AddChecksumFile("/dl/SHA256SUMS", map[string]string{"big.img": f.SHA256()})
	c := copyCluster(t, 0, catalogWith(t, "test-big", f, sums))
	a := c.localPoolOn(t, "a", "/srv/a", "n1")
	b := c.localPoolOn(t, "b", "/srv/b", "n2")

	first, err := c.s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{CatalogId: "test-big", StoragePoolId: a.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	byURL := download(t, c.s, a.GetId(), f.URL(), "")
	if !byURL.GetExisting() || byURL.GetJob().GetId() != first.Msg.GetJob().GetId() {
		t.Errorf("the same URL into the same pool: %v; want job %s", byURL, first.Msg.GetJob().GetId())
	}
	other := download(t, c.s, b.GetId(), f.URL(), "")
	if other.GetExisting() || other.GetJob().GetId() == first.Msg.GetJob().GetId() {
		t.Errorf("the same URL into another pool: %v; want a job of its own", other)
	}
	for _, id := range []string{first.Msg.GetJob().GetId(), other.GetJob().GetId()} {
		if j := waitJob(t, c.s, id, 30*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
			t.Errorf("job %v", j)
		}
	}
	if n := len(images(t, c.s, a.GetId())); n != 1 {
		t.Errorf("pool a holds %d images; want 1", n)
	}
}

// TestCopyCancel: a copy between nodes cancelled mid-way ends CANCELLED,
// its image record goes, and no partial file is left on the target.
func TestCopyCancel(t *testing.T) {
	const size = 8 * mib
	c := copyClusterOf(t, []string{"n1", "n2"}, 1*mib)
	o := origintest.New(t)
	f := o.Add("/big.img", origintest.Random(size, 14))
	a := c.localPoolOn(t, "a", "/srv/a", "n1")
	b := c.localPoolOn(t, "b", "/srv/b", "n2")
	src := readyImage(t, c, a, f)

	m := copyImage(t, c.s, src.GetId(), b.GetId(), "")
	waitProgress(t, c.s, m.GetJob().GetId(), mib)
	if _, err := c.s.Jobs.CancelJob(t.Context(), connect.NewRequest(&quarryv1.CancelJobRequest{Id: m.GetJob().GetId()})); err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, c.s, m.GetJob().GetId(), 20*time.Second); j.GetState() != quarryv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("job %v", j)
	}
	if _, err := c.s.Images.GetImage(t.Context(), connect.NewRequest(&quarryv1.GetImageRequest{Id: m.GetImage().GetId()})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("the cancelled copy's image: %v; want it gone", err)
	}
	dir := c.agents["n2"].Opts.LocalPath("/srv/b")
	if left := entries(t, filepath.Join(dir, ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}
	if left := entries(t, filepath.Join(dir, "images")); len(left) != 0 {
		t.Errorf("images/ holds %v", left)
	}
}
