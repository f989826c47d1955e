package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
	"github.com/quarry-project/quarry/internal/server"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/store/pgtest"
	"github.com/quarry-project/quarry/internal/store/sqlstore"
)

// replica is one `quarry server` process of several on one PostgreSQL
// database.
type replica struct {
	name   string
	cmd    *exec.Cmd
	output *lockedBuffer
	done   chan struct{}
	// s has the replica's URL and clients with the first replica's admin
	// token, which works on every replica.
	s *quarrytest.Server
}

// replicaSet is what the replicas of one test share.
type replicaSet struct {
	url, keyFile, token string
	extra               []string // flags of every replica
}

// startReplica runs `quarry server` on listen with dataDir on the set's
// database and returns once its /readyz answers 200. The set's extra
// flags come last, over the defaults.
func (rs replicaSet) startReplica(t *testing.T, name, dataDir, listen string) *replica {
	t.Helper()
	args := append([]string{"server", "--listen", listen, "--data-dir", dataDir,
		"--database-url", rs.url, "--secret-key-file", rs.keyFile, "--allow-loopback-urls",
		"--health-interval", quarrytest.HealthInterval.String(), "--scan-interval", "0", "--scan-delay", "1h"}, rs.extra...)
	cmd := exec.Command(quarrytest.Binary(t), args...)
	r := &replica{name: name, cmd: cmd, output: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = r.output, r.output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		r.signal(syscall.SIGCONT)
		r.kill()
		if t.Failed() {
			t.Logf("replica %s's log:\n%s", name, lastLines(r.output.String(), 40))
		}
	})
	r.s = &quarrytest.Server{URL: "http://" + listen, DataDir: dataDir, AdminToken: rs.token}
	r.s.Clients = r.s.ClientsFor(rs.token)
	quarrytest.Eventually(t, 20*time.Second, func() error {
		select {
		case <-r.done:
			t.Fatalf("replica %s exited: %v\n%s", name, cmd.ProcessState, r.output)
		default:
		}
		_, err := r.readyz()
		return err
	})
	return r
}

// readyz returns the body of a 200 answer of /readyz.
func (r *replica) readyz() (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(r.s.URL + "/readyz")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/readyz: %s: %s", resp.Status, b)
	}
	return string(b), nil
}

// metric returns the value of an unlabelled metric, or the sum of a
// labelled one's series whose labels contain match.
func (r *replica) metric(t *testing.T, name, match string) float64 {
	t.Helper()
	resp, err := http.Get(r.s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for line := range strings.Lines(string(b)) {
		series, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(series, "#") {
			continue
		}
		base, labels, _ := strings.Cut(series, "{")
		if base != name || !strings.Contains(labels, match) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric %s: %v", line, err)
		}
		sum += v
	}
	return sum
}

func (r *replica) signal(sig syscall.Signal) {
	select {
	case <-r.done:
	default:
		r.cmd.Process.Signal(sig)
	}
}

func (r *replica) kill() {
	r.signal(syscall.SIGKILL)
	<-r.done
}

// waitLeading waits until r's /readyz says it leads, and returns how long
// that took.
func (r *replica) waitLeading(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	quarrytest.Eventually(t, within, func() error {
		body, err := r.readyz()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(body, "ready: leader") {
			return fmt.Errorf("replica %s: %s", r.name, strings.TrimSpace(body))
		}
		return nil
	})
	return time.Since(start)
}

// twoReplicas prepares a PostgreSQL database with an agent enrolled and a
// pool, through an in-process control plane that stops before the
// replicas start: replica a (on its data directory, which holds the admin
// token and the secret key) leads, b follows. Both run with the extra
// flags, over the defaults.
func twoReplicas(t *testing.T, extra ...string) (a, b *replica, ag *quarrytest.Agent, poolID, poolDir string) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	s := quarrytest.StartServer(t, quarrytest.WithDatabaseURL(url))
	ag = quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	poolDir = ag.Opts.LocalPath("/srv/local")
	mkdir(t, poolDir)
	waitState(t, s, ag.NodeID, quarryv1.NodeState_NODE_STATE_READY, 10*time.Second)
	poolID = createPool(t, s, "local", "/srv/local", ag.NodeID)
	s.Stop()
	// Written before any replica watches the pool: only a scan finds it.
	mkdir(t, filepath.Join(poolDir, "iso"))
	iso := filepath.Join(poolDir, "iso", "tiny.iso")
	if err := os.WriteFile(iso, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	// Settled long ago: a scan registers it at once instead of waiting.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(iso, old, old); err != nil {
		t.Fatal(err)
	}

	rs := replicaSet{url: url, keyFile: filepath.Join(s.DataDir, "secret.key"), token: s.AdminToken, extra: extra}
	a = rs.startReplica(t, "a", s.DataDir, strings.TrimPrefix(s.URL, "http://"))
	a.waitLeading(t, 10*time.Second)
	b = rs.startReplica(t, "b", t.TempDir(), freeAddr(t))
	if body, _ := b.readyz(); !strings.HasPrefix(body, "ready: follower") {
		t.Fatalf("replica b's /readyz: %q; want a follower", body)
	}
	if _, err := os.Stat(filepath.Join(b.s.DataDir, "admin.token")); err == nil {
		t.Errorf("the second replica wrote an admin token; only the first on an empty database does")
	}
	return a, b, ag, poolID, poolDir
}

// TestReplicasFileEventsThroughFollower: an agent that tells a follower it
// has file events (its control plane URL leads to one) gets them
// collected by the leader, which scans the pool: an ISO copied into it is
// in the library within seconds, though the leader checks the node only
// once a minute.
func TestReplicasFileEventsThroughFollower(t *testing.T) {
	a, b, _, poolID, poolDir := twoReplicas(t, "--health-interval", "1m")
	// The agent announces itself at a's address: a follower must answer
	// there. b leads once a is gone, and c follows at a's address.
	listen := strings.TrimPrefix(a.s.URL, "http://")
	a.kill()
	b.waitLeading(t, 10*time.Second)
	rs := replicaSet{url: aURL(t, a), keyFile: filepath.Join(a.s.DataDir, "secret.key"), token: a.s.AdminToken,
		extra: []string{"--health-interval", "1m"}}
	c := rs.startReplica(t, "c", t.TempDir(), listen)
	if body, _ := c.readyz(); !strings.HasPrefix(body, "ready: follower") {
		t.Fatalf("replica c's /readyz: %q; want a follower", body)
	}
	// b's first check of the node, when it took over, had it scan the pool.
	waitImage(t, b.s, poolID, "iso/tiny.iso", quarryv1.ImageState_IMAGE_STATE_READY, 10*time.Second)

	writeISO(t, filepath.Join(poolDir, "iso", "fresh.iso"), "FRESH", 1<<20)
	written := time.Now()
	waitImage(t, b.s, poolID, "iso/fresh.iso", quarryv1.ImageState_IMAGE_STATE_READY, 10*time.Second)
	t.Logf("an ISO announced to the follower was in the library %v after it was written (health interval 1m)",
		time.Since(written).Round(time.Millisecond))
	if log := c.output.String(); strings.Contains(log, "leading the control plane") {
		t.Errorf("replica c led:\n%s", lastLines(log, 20))
	}
}

// TestReplicasFailover: two `quarry server` replicas on one PostgreSQL
// database, an agent, a slow download asked of the follower. A scan asked
// of the follower runs on the leader; the follower's WatchJob hears the
// leader's progress. The leader is SIGKILLed in the middle of the
// download: the follower leads within 10 s, re-adopts the download, which
// the agent kept on with, and it completes: one job, one image, READY.
func TestReplicasFailover(t *testing.T) {
	a, b, _, poolID, poolDir := twoReplicas(t)
	if a.metric(t, "quarry_leader", "") != 1 || b.metric(t, "quarry_leader", "") != 0 {
		t.Fatalf("quarry_leader: a %v, b %v; want 1 and 0", a.metric(t, "quarry_leader", ""), b.metric(t, "quarry_leader", ""))
	}

	// A scan asked of the follower runs on the leader.
	scan, err := b.s.Images.ScanISOs(t.Context(), connect.NewRequest(&quarryv1.ScanISOsRequest{StoragePoolId: poolID}))
	if err != nil {
		t.Fatalf("ScanISOs on the follower: %v", err)
	}
	// (The agent's file events may have registered tiny.iso first: the
	// library, not the count, says the scan's outcome.)
	if rs := scan.Msg.GetResults(); len(rs) != 1 || rs[0].GetNodeName() != "n1" || rs[0].GetSkipped() || rs[0].GetTrigger() != "manual" {
		t.Fatalf("ScanISOs on the follower: %v; want pool local scanned through n1", scan.Msg)
	}
	ims, err := b.s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: poolID}))
	if err != nil || len(ims.Msg.GetImages()) != 1 || ims.Msg.GetImages()[0].GetName() != "tiny.iso" {
		t.Fatalf("images after the scan: %v, %v; want tiny.iso", ims.Msg.GetImages(), err)
	}
	st, err := b.s.Images.GetScanStatus(t.Context(), connect.NewRequest(&quarryv1.GetScanStatusRequest{}))
	if err != nil || len(st.Msg.GetLast()) != 1 || st.Msg.GetLast()[0].GetTrigger() != "manual" {
		t.Fatalf("GetScanStatus on the follower: %v, %v; want the leader's manual scan", st.Msg, err)
	}
	if ran, here := a.metric(t, "quarry_scans_total", `trigger="manual"`), b.metric(t, "quarry_scans_total", `trigger="manual"`); ran != 1 || here != 0 {
		t.Fatalf("manual scans: %v on the leader, %v on the follower; want 1 and 0", ran, here)
	}

	// The follower's event stream hears what the leader writes, within 1 s:
	// a token made on the leader, which then works on the follower.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	watch, err := b.s.Events.Watch(ctx, connect.NewRequest(&quarryv1.WatchRequest{}))
	if err != nil || !watch.Receive() || !watch.Msg().GetReady() {
		t.Fatalf("Watch on the follower: %v %v", err, watch.Err())
	}
	evs := make(chan *quarryv1.Event, 1024)
	go func() {
		for watch.Receive() {
			for _, e := range watch.Msg().GetEvents() {
				select {
				case evs <- e:
				default:
				}
			}
		}
	}()
	made := time.Now()
	tok, err := a.s.Tokens.CreateToken(t.Context(), connect.NewRequest(&quarryv1.CreateTokenRequest{
		Name: "ops", Kind: quarryv1.TokenKind_TOKEN_KIND_API, Role: quarryv1.Role_ROLE_VIEWER}))
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, evs, 5*time.Second, func(e *quarryv1.Event) bool {
		return e.GetResource() == quarryv1.Resource_RESOURCE_TOKEN && e.GetId() == tok.Msg.GetToken().GetId()
	})
	latency := time.Since(made)
	t.Logf("a change made on the leader reached the follower's event stream in %v", latency.Round(time.Millisecond))
	if latency > time.Second {
		t.Errorf("the follower's event stream heard the leader's change after %v; want within 1 s", latency)
	}
	if _, err := b.s.ClientsFor(tok.Msg.GetSecret()).Pools.ListPools(t.Context(), connect.NewRequest(&quarryv1.ListPoolsRequest{})); err != nil {
		t.Errorf("a token made on the leader, used on the follower: %v", err)
	}

	// A slow download, asked of the follower, run by the leader: the
	// follower's stream hears its progress.
	o := origintest.New(t)
	const size = 48 * mib
	f := o.Add("/big.raw", origintest.Random(size, 3))
	f.RateLimit(4 * mib)
	m := download(t, b.s, poolID, f.URL(), "sha256:"+f.SHA256())
	jobID := m.GetJob().GetId()
	waitEvent(t, evs, 20*time.Second, func(e *quarryv1.Event) bool {
		return e.GetId() == jobID && e.GetJob().GetProgress().GetBytesDone() >= 8*mib
	})
	watchJob, err := b.s.Jobs.WatchJob(ctx, connect.NewRequest(&quarryv1.WatchJobRequest{Id: jobID}))
	if err != nil {
		t.Fatal(err)
	}

	a.kill()
	killed := time.Now()
	took := b.waitLeading(t, 10*time.Second)
	t.Logf("takeover after SIGKILL of the leader: %v", took.Round(10*time.Millisecond))
	if f.BytesServed() >= size {
		t.Fatalf("the download ended before the takeover; make it slower")
	}
	f.RateLimit(0) // what is left is for the new leader to follow, not to wait for

	j := waitJob(t, b.s, jobID, 30*time.Second)
	t.Logf("download completed %v after the kill", time.Since(killed).Round(10*time.Millisecond))
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v; want SUCCEEDED", j)
	}
	if served := f.BytesServed(); served > size+8*mib {
		t.Errorf("the origin served %d bytes for a %d-byte file: the download started over instead of being re-adopted", served, size)
	}
	// The follower's WatchJob, opened before the kill, saw the end.
	var last *quarryv1.Job
	for watchJob.Receive() {
		last = watchJob.Msg().GetJob()
	}
	if last.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
		t.Errorf("WatchJob on the follower ended with %v (%v)", last, watchJob.Err())
	}
	ims, err = b.s.Images.ListImages(t.Context(), connect.NewRequest(&quarryv1.ListImagesRequest{StoragePoolId: poolID}))
	if err != nil {
		t.Fatal(err)
	}
	var ready int
	for _, im := range ims.Msg.GetImages() {
		if im.GetName() == "big.raw" {
			if im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetDigest() != "sha256:"+f.SHA256() {
				t.Errorf("image %v; want READY with the origin's digest", im)
			}
			ready++
		}
	}
	if ready != 1 {
		t.Errorf("%d images big.raw; want 1", ready)
	}
	jobs, err := b.s.Jobs.ListJobs(t.Context(), connect.NewRequest(&quarryv1.ListJobsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var same int
	for _, other := range jobs.Msg.GetJobs() {
		if other.GetSource() == f.URL() {
			same++
		}
	}
	if same != 1 {
		t.Errorf("%d jobs for %s; want 1", same, f.URL())
	}
	if got, _ := os.ReadFile(filepath.Join(poolDir, "images", "big.raw")); len(got) != size {
		t.Errorf("images/big.raw holds %d bytes; want %d", len(got), size)
	}
}

// TestReplicasPausedLeader: the leader is frozen (SIGSTOP) until the
// follower took over, then thawed. It must not write with its old epoch:
// it steps down, and the new leader keeps the lease; a write carrying the
// old epoch is refused by the database.
func TestReplicasPausedLeader(t *testing.T) {
	a, b, _, _, _ := twoReplicas(t)
	old := a.metric(t, "quarry_leader_epoch", "")

	a.signal(syscall.SIGSTOP)
	took := b.waitLeading(t, 10*time.Second)
	t.Logf("takeover from a frozen leader: %v", took.Round(10*time.Millisecond))
	if now := b.metric(t, "quarry_leader_epoch", ""); now != old+1 {
		t.Fatalf("epoch after the takeover %v; want %v", now, old+1)
	}

	a.signal(syscall.SIGCONT)
	quarrytest.Eventually(t, 5*time.Second, func() error {
		body, err := a.readyz()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(body, "ready: follower") || a.metric(t, "quarry_leader", "") != 0 {
			return fmt.Errorf("the thawed replica: %s", strings.TrimSpace(body))
		}
		// It says so once its controllers stopped, just after it turned
		// follower.
		if log := a.output.String(); !strings.Contains(log, "no longer leading") {
			return fmt.Errorf("the thawed replica did not log that it stepped down:\n%s", lastLines(log, 20))
		}
		return nil
	})
	log := a.output.String()
	t.Logf("the thawed leader stepped down:\n%s", lastLines(grepLines(log, "no longer leading", "refused"), 5))
	// The new leader keeps leading: the old one did not take the lease back.
	if body, _ := b.readyz(); !strings.HasPrefix(body, "ready: leader") || b.metric(t, "quarry_leader", "") != 1 {
		t.Fatalf("replica b after the thaw: %q", body)
	}

	// What the old leader's controllers would write carries the old epoch:
	// the database refuses it.
	st, err := sqlstore.OpenPostgres(t.Context(), aURL(t, a))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fenced := store.WithFence(t.Context(), store.Fence{Epoch: int64(old)})
	nodes, err := st.ListNodes(t.Context())
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes: %v, %v", nodes, err)
	}
	err = st.RecordNodeCheck(fenced, nodes[0].ID, store.NodeStatus{State: store.NodeUnreachable, StateReason: "stale leader", LastCheckedAt: time.Now()}, nil)
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a node check written with the old epoch: %v; want ErrFenced", err)
	}
	if n, err := st.GetNode(t.Context(), nodes[0].ID); err != nil || n.StateReason == "stale leader" {
		t.Fatalf("node after the refused write: %+v, %v", n, err)
	}
}

// aURL is the database URL replica r was started with.
func aURL(t *testing.T, r *replica) string {
	for i, arg := range r.cmd.Args {
		if arg == "--database-url" {
			return r.cmd.Args[i+1]
		}
	}
	t.Fatal("no --database-url")
	return ""
}

// grepLines returns the lines of s that contain any of subs.
func grepLines(s string, subs ...string) string {
	var out strings.Builder
	for line := range strings.Lines(s) {
		for _, sub := range subs {
			if strings.Contains(line, sub) {
				out.WriteString(line)
				break
			}
		}
	}
	return out.String()
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitEvent reads evs until one matches, within d.
func waitEvent(t *testing.T, evs <-chan *quarryv1.Event, d time.Duration, match func(*quarryv1.Event) bool) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e := <-evs:
			if match(e) {
				return
			}
		case <-timeout:
			t.Fatalf("no matching event within %v", d)
		}
	}
}

// TestReplicasNeedTheSecretKey: a replica on a database whose CA another
// replica sealed refuses to start without that replica's secret key — a
// missing key file (which it does not create) or another key — and says
// what to do.
func TestReplicasNeedTheSecretKey(t *testing.T) {
	url := pgtest.NewDatabase(t)
	first := quarrytest.StartServer(t, quarrytest.WithDatabaseURL(url))
	if fi, err := os.Stat(filepath.Join(first.DataDir, "secret.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the first replica's secret key: %v, %v; want a 0600 file in its data directory", fi, err)
	}
	dir := t.TempDir()
	run := func(keyFile string) string {
		t.Helper()
		cmd := exec.Command(quarrytest.Binary(t), "server", "--listen", "127.0.0.1:0", "--data-dir", dir,
			"--database-url", url, "--secret-key-file", keyFile)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("quarry server --secret-key-file %s started:\n%s", keyFile, out)
		}
		return string(out)
	}
	missing := filepath.Join(dir, "none.key")
	if out := run(missing); !strings.Contains(out, "copy that replica's key file") {
		t.Errorf("without the key file:\n%s", out)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("the refused replica created %s", missing)
	}
	wrong := filepath.Join(dir, "wrong.key")
	if err := os.WriteFile(wrong, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(wrong); !strings.Contains(out, "does not open the CA") || !strings.Contains(out, "same --secret-key-file") {
		t.Errorf("with another key:\n%s", out)
	}
}

// TestReplicasGracefulHandover: a leader that stops gives the lease up, so
// a follower leads within a second or so rather than a lease's lifetime.
// The follower, started second on the database, makes no admin token of
// its own: the first replica's works on it.
func TestReplicasGracefulHandover(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := quarrytest.StartServer(t, quarrytest.WithDatabaseURL(url))
	key := filepath.Join(a.DataDir, "secret.key")
	// The test harness reads the admin token from the data directory: the
	// first replica's is put there, and must stay as it is.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(a.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := quarrytest.StartServer(t, quarrytest.WithDatabaseURL(url), quarrytest.WithDataDir(dir),
		func(c *server.Config) { c.SecretKeyFile = key })
	if b.AdminToken != a.AdminToken {
		t.Fatalf("the second replica wrote an admin token of its own")
	}
	ra, rb := &replica{name: "a", s: a}, &replica{name: "b", s: b}
	ra.waitLeading(t, 5*time.Second)
	if body, _ := rb.readyz(); !strings.HasPrefix(body, "ready: follower") {
		t.Fatalf("b: %q; want a follower", body)
	}
	if _, err := b.Nodes.ListNodes(t.Context(), connect.NewRequest(&quarryv1.ListNodesRequest{})); err != nil {
		t.Fatalf("the first replica's admin token on the second: %v", err)
	}
	a.Stop()
	took := rb.waitLeading(t, 3*time.Second)
	t.Logf("handover after a graceful stop: %v", took.Round(10*time.Millisecond))
}
