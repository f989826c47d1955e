package download_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/quarrytest"
)

// The controller's goroutines (its queue's workers, the progress streams
// it follows) all end with the control plane. End-to-end behaviour is
// tested in internal/e2e; this package's tests prove nothing is left
// running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDownloadThenStop runs a download to its end and one that is still
// running when the control plane stops.
func TestDownloadThenStop(t *testing.T) {
	s := quarrytest.StartServer(t)
	a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: "n1"})
	if err := os.MkdirAll(a.Opts.LocalPath("/srv/local"), 0o755); err != nil {
		t.Fatal(err)
	}
	quarrytest.Eventually(t, 10*time.Second, func() error {
		n, err := s.Nodes.GetNode(t.Context(), connect.NewRequest(&quarryv1.GetNodeRequest{Id: a.NodeID}))
		if err != nil {
			return err
		}
		if n.Msg.GetNode().GetState() != quarryv1.NodeState_NODE_STATE_READY {
			return fmt.Errorf("node n1 is %v", n.Msg.GetNode().GetState())
		}
		return nil
	})
	resp, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
		Name: "local", Path: "/srv/local", AssignedNodeIds: []string{a.NodeID}}))
	if err != nil {
		t.Fatal(err)
	}
	poolID := resp.Msg.GetPool().GetId()
	o := origintest.New(t)
	small := o.Add("/small.img", origintest.Random(1<<20, 1))
	slow := o.Add("/slow.img", origintest.Random(64<<20, 2))
	slow.RateLimit(1 << 20)

	start := func(f *origintest.File) string {
		var id string
		quarrytest.Eventually(t, 10*time.Second, func() error {
			r, err := s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{
				Url: f.URL(), StoragePoolId: poolID, Checksum: "sha256:" + f.SHA256()}))
			if err != nil {
				return err // the pool's marker may not be written yet
			}
			id = r.Msg.GetJob().GetId()
			return nil
		})
		return id
	}
	job := func(id string) *quarryv1.Job {
		r, err := s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.GetJob()
	}
	done, running := start(small), start(slow)
	quarrytest.Eventually(t, 30*time.Second, func() error {
		if j := job(done); j.GetState() != quarryv1.JobState_JOB_STATE_SUCCEEDED {
			return fmt.Errorf("job %v: %s", j.GetState(), j.GetMessage())
		}
		if j := job(running); j.GetProgress().GetBytesDone() == 0 {
			return fmt.Errorf("the slow download has not started")
		}
		return nil
	})
	s.Stop()
	a.Stop()
}

// TestCopyThenStop runs a copy between two agents (the peer endpoint, its
// client and the grant) and stops everything while it runs: nothing is
// left running.
func TestCopyThenStop(t *testing.T) {
	s := quarrytest.StartServer(t)
	var agents []*quarrytest.Agent
	var pools []string
	for _, name := range []string{"n1", "n2"} {
		a := quarrytest.StartAgent(t, s, quarrytest.AgentOptions{Name: name, PeerReadRate: 1 << 20})
		if err := os.MkdirAll(a.Opts.LocalPath("/srv/"+name), 0o755); err != nil {
			t.Fatal(err)
		}
		var poolID string
		quarrytest.Eventually(t, 10*time.Second, func() error {
			r, err := s.Pools.CreatePool(t.Context(), connect.NewRequest(&quarryv1.CreatePoolRequest{
				Name: name, Path: "/srv/" + name, AssignedNodeIds: []string{a.NodeID}}))
			if err != nil {
				return err // the node may not be READY yet
			}
			poolID = r.Msg.GetPool().GetId()
			return nil
		})
		agents, pools = append(agents, a), append(pools, poolID)
	}
	o := origintest.New(t)
	f := o.Add("/src.img", origintest.Random(8<<20, 3))
	var imageID, jobID string
	quarrytest.Eventually(t, 30*time.Second, func() error {
		if jobID == "" {
			r, err := s.Images.DownloadImage(t.Context(), connect.NewRequest(&quarryv1.DownloadImageRequest{
				Url: f.URL(), StoragePoolId: pools[0], Checksum: "sha256:" + f.SHA256()}))
			if err != nil {
				return err // the pool's marker may not be written yet
			}
			imageID, jobID = r.Msg.GetImage().GetId(), r.Msg.GetJob().GetId()
		}
		r, err := s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: jobID}))
		if err != nil {
			return err
		}
		if st := r.Msg.GetJob().GetState(); st != quarryv1.JobState_JOB_STATE_SUCCEEDED {
			return fmt.Errorf("download %v", st)
		}
		return nil
	})
	var copyJob string
	quarrytest.Eventually(t, 10*time.Second, func() error {
		r, err := s.Images.CopyImage(t.Context(), connect.NewRequest(&quarryv1.CopyImageRequest{ImageId: imageID, StoragePoolId: pools[1]}))
		if err != nil {
			return err
		}
		copyJob = r.Msg.GetJob().GetId()
		return nil
	})
	quarrytest.Eventually(t, 30*time.Second, func() error {
		r, err := s.Jobs.GetJob(t.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: copyJob}))
		if err != nil {
			return err
		}
		if r.Msg.GetJob().GetProgress().GetBytesDone() == 0 {
			return fmt.Errorf("the copy has not started: %s", r.Msg.GetJob().GetMessage())
		}
		return nil
	})
	s.Stop()
	for _, a := range agents {
		a.Stop()
	}
}
