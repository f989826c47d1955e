package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/agent"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// TestDownloadHungNodeFailsOver: the downloading agent of a shared pool
// hangs (SIGSTOP: its connections stay open, it answers nothing). With the
// default health interval the node turns UNREACHABLE within 30 s, the job
// moves to the other node that mounts the pool within 15 s of that and
// resumes from the partial file; the image ends READY and verified. Woken
// up, the old agent finds it lost the job and stops writing.
func TestDownloadHungNodeFailsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("uses the default 5 s health interval")
	}
	const interval = 5 * time.Second // the default --health-interval
	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t, quarrytest.WithHealthInterval(interval))
	shared := t.TempDir()
	mkdir(t, shared+"/isos")
	binds := []agent.Bind{{Path: "/srv/nfs", Dir: shared}}
	n1 := quarrytest.StartAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: "n1", Binds: binds})
	n2 := quarrytest.StartAgentProcess(t, bin, s, quarrytest.AgentOptions{Name: "n2", Binds: binds})
	for _, id := range []string{n1.NodeID, n2.NodeID} {
		waitState(t, s, id, quarryv1.NodeState_NODE_STATE_READY, 30*time.Second)
	}
	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "isos", Path: "/srv/nfs/isos", Shared: true, AssignedNodeIds: []string{n1.NodeID, n2.NodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	pool := resp.Msg.GetPool()
	quarrytest.Eventually(t, 30*time.Second, func() error {
		p, err := s.Pools.GetPool(t.Context(), connect.NewRequest(&quarryv1.GetPoolRequest{Id: pool.GetId()}))
		if err != nil {
			return err
		}
		mounted := 0
		for _, m := range p.Msg.GetPool().GetNodes() {
			if m.GetMounted() {
				mounted++
			}
		}
		if mounted != 2 {
			return fmt.Errorf("pool mounted on %d nodes, want 2", mounted)
		}
		return nil
	})

	o := origintest.New(t)
	// What the hung agent's socket buffers hold when it freezes (several
	// MiB the origin sent and nobody read) counts as served: the image is
	// large enough for that to be a small part of it.
	const size = 128 * mib
	f := o.Add("/big.img", origintest.Random(size, 31))
	f.RateLimit(10 * mib)
	m := download(t, s, pool.GetId(), f.URL(), "sha256:"+f.SHA256())
	id := m.GetJob().GetId()
	waitProgress(t, s, id, 48*mib)
	owner := getJob(t, s, id).GetNodeName()
	hung, other := n1, n2
	if owner == "n2" {
		hung, other = n2, n1
	}
	hung.Freeze()
	frozen := time.Now()

	// The node turns UNREACHABLE, then the job shows the other node.
	var unreachable time.Duration
	quarrytest.Eventually(t, 30*time.Second, func() error {
		n, err := s.Nodes.GetNode(t.Context(), connect.NewRequest(&quarryv1.GetNodeRequest{Id: hung.NodeID}))
		if err != nil {
			return err
		}
		if st := n.Msg.GetNode().GetState(); st != quarryv1.NodeState_NODE_STATE_UNREACHABLE {
			return fmt.Errorf("node %s is %v", owner, st)
		}
		unreachable = time.Since(frozen)
		return nil
	})
	quarrytest.Eventually(t, 15*time.Second, func() error {
		if j := getJob(t, s, id); j.GetNodeName() != other.Opts.Name {
			return fmt.Errorf("job on node %s (%s)", j.GetNodeName(), j.GetMessage())
		}
		return nil
	})
	moved := time.Since(frozen)
	t.Logf("frozen node %s: UNREACHABLE after %v, job on %s after %v (%v after UNREACHABLE)",
		owner, unreachable.Round(time.Millisecond), other.Opts.Name, moved.Round(time.Millisecond), (moved - unreachable).Round(time.Millisecond))

	j := waitJob(t, s, id, 60*time.Second)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() != other.Opts.Name {
		t.Fatalf("job %v on %s: %s; want SUCCEEDED on %s", j.GetState(), j.GetNodeName(), j.GetMessage(), other.Opts.Name)
	}
	if im := getImage(t, s, m.GetImage().GetId()); im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY || im.GetDigest() != "sha256:"+f.SHA256() {
		t.Errorf("image %v; want READY with the origin's digest", im)
	}
	// The new node resumes from the last checkpoint: at most one
	// checkpoint interval (2 s, the agent's default) at the origin's rate
	// is fetched again, plus what sat in the frozen agent's socket buffers.
	served := f.BytesServed()
	limit := int64(size + 2*10*mib + 8*mib)
	t.Logf("origin served %.3f× the image (%d bytes for %d) before the hung agent woke up", float64(served)/size, served, size)
	if served > limit {
		t.Errorf("origin served %d bytes; want ≤ %d (the image, one checkpoint interval, socket buffers)", served, limit)
	}
	if !strings.Contains(strings.Join(historyOf(j), "\n"), "moved to node "+other.Opts.Name+", resuming from the partial file") {
		t.Errorf("history does not tell the move: %v", historyOf(j))
	}

	// Woken up, the old agent finds it lost the job and stops, leaving
	// the image and the pool as they are.
	hung.Thaw()
	quarrytest.Eventually(t, 30*time.Second, func() error {
		if out := hung.Output(); !strings.Contains(out, "DOWNLOAD_STATE_FENCED") {
			return fmt.Errorf("the woken agent has not stopped the download yet")
		}
		return nil
	})
	if left := entries(t, shared+"/isos/.quarry/partial"); len(left) != 0 {
		t.Errorf("left in the pool after the woken agent stopped: %v", left)
	}
	if im := getImage(t, s, m.GetImage().GetId()); im.GetState() != quarryv1.ImageState_IMAGE_STATE_READY {
		t.Errorf("image after the old agent woke up: %v", im)
	}
}

func historyOf(j *quarryv1.Job) []string {
	var h []string
	for _, e := range j.GetHistory() {
		h = append(h, e.GetMessage())
	}
	return h
}

// TestDownloadCrashRefetch: a node that crashes (SIGKILL) mid-download at
// full speed, with the default checkpoint interval: the other node that
// mounts the shared pool resumes from the last checkpoint. The download
// goes in segments of at most 32 MiB over 4 connections (the default), and
// a checkpoint is taken at least every 2 s, so what is fetched again is at
// most 2 s at the download's rate, plus what each socket held (Linux grows
// a fast connection's receive buffer to several MiB); starting again from
// zero would fetch half the image again.
func TestDownloadCrashRefetch(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads 1 GiB")
	}
	bin := quarrytest.Binary(t)
	s := quarrytest.StartServer(t)
	shared := t.TempDir()
	mkdir(t, shared+"/isos")
	binds := []agent.Bind{{Path: "/srv/nfs", Dir: shared}}
	opts := func(name string) quarrytest.AgentOptions {
		return quarrytest.AgentOptions{Name: name, Binds: binds, CheckpointEvery: 2 * time.Second}
	}
	n1 := quarrytest.StartAgentProcess(t, bin, s, opts("n1"))
	n2 := quarrytest.StartAgentProcess(t, bin, s, opts("n2"))
	for _, id := range []string{n1.NodeID, n2.NodeID} {
		waitState(t, s, id, quarryv1.NodeState_NODE_STATE_READY, 30*time.Second)
	}
	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "isos", Path: "/srv/nfs/isos", Shared: true, AssignedNodeIds: []string{n1.NodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	o := origintest.New(t)
	const size = 1 << 30
	f := o.Add("/big.img", origintest.Random(size, 32))
	m := download(t, s, resp.Msg.GetPool().GetId(), f.URL(), "sha256:"+f.SHA256())
	start := time.Now()
	// Killed once the origin has served half the image: the job's progress
	// is stored at most once a second, and at this speed the node could
	// finish the image in the second before the progress said half.
	quarrytest.Eventually(t, 2*time.Minute, func() error {
		if served := f.BytesServed(); served < size/2 {
			return fmt.Errorf("the origin served %d of %d bytes", served, size)
		}
		return nil
	})
	rate := float64(size/2) / time.Since(start).Seconds()
	n1.Kill()
	j := waitJob(t, s, m.GetJob().GetId(), 5*time.Minute)
	if j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED || j.GetNodeName() != "n2" {
		t.Fatalf("job %v on %s: %s; want SUCCEEDED on n2", j.GetState(), j.GetNodeName(), j.GetMessage())
	}
	served := f.BytesServed()
	t.Logf("crash at half of 1 GiB at about %.0f MiB/s: origin served %.3f× the image (%d MiB again)",
		rate/mib, float64(served)/size, (served-size)/mib)
	if served >= size+size/2 {
		t.Errorf("origin served %d bytes, half the image again or more: the download started again from zero", served)
	}
	if limit := int64(size + 2*rate + 4*8*mib); served > limit {
		t.Errorf("origin served %d bytes; want ≤ %d (the image, 2 s at %.0f MiB/s, 8 MiB of socket buffers for each of 4 connections)", served, limit, rate/mib)
	}
}
