package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/ingest"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/uploadwire"
)

// idleUpload is how long an open upload waits for its next write before
// its file and buffers are released; the next call opens it again from
// its checkpoint.
const idleUpload = 2 * time.Minute

// uploads holds the uploads open on this node: the partial file and the
// hash state stay in memory between a client's writes.
type uploads struct {
	a    *Agent
	mu   sync.Mutex
	open map[string]*openUpload // by job id
}

type openUpload struct {
	// mu is held by the one write in progress, and to close.
	mu      sync.Mutex
	u       *ingest.Upload // nil once closed
	root    *os.Root
	dir     string
	fence   int64
	length  int64
	durable atomic.Int64 // the offset last made durable, for OpenUpload during a write
	used    atomic.Int64 // unix nanoseconds of the last use
}

func newUploads(a *Agent) *uploads { return &uploads{a: a, open: map[string]*openUpload{}} }

func (ou *openUpload) close() {
	if ou.u != nil {
		ou.u.Close()
		ou.u = nil
		ou.root.Close()
	}
}

// get returns the open upload ref names, opening it if need be. A higher
// fence than the open one's reopens it (taking the job over); a lower one
// is refused.
func (s *service) upload(ref *agentv1.UploadRef) (*openUpload, error) {
	ups := s.a.uploads
	ups.mu.Lock()
	defer ups.mu.Unlock()
	ups.closeIdle()
	if ou, ok := ups.open[ref.GetJobId()]; ok {
		switch {
		case ou.fence > ref.GetFence():
			return nil, errclass.New(errclass.Fenced, "upload %s is owned by fence %d here; fence %d is stale", ref.GetJobId(), ou.fence, ref.GetFence())
		case ou.fence == ref.GetFence():
			ou.used.Store(time.Now().UnixNano())
			return ou, nil
		}
		ou.mu.Lock()
		ou.close()
		ou.mu.Unlock()
		delete(ups.open, ref.GetJobId())
	}
	_, dir, err := s.mountedDir(ref.GetPool())
	if err != nil {
		return nil, err
	}
	if err := checkImagePath(ref.GetDest()); err != nil {
		return nil, err
	}
	var expected checksum.Digest
	if c := ref.GetChecksum(); c != "" {
		if expected, err = checksum.ParseDigest(c); err != nil {
			return nil, errclass.Wrap(errclass.InvalidArgument, err, "%v", err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, errclass.New(errclass.FailedPrecondition, "opening the pool: %v", cause(err))
	}
	ou := &openUpload{root: root, dir: dir, fence: ref.GetFence(), length: ref.GetLength()}
	u, err := ingest.OpenUpload(ingest.UploadRequest{
		Job: ref.GetJobId(), Fence: uint64(ref.GetFence()), Root: root, Dest: ref.GetDest(), Length: ref.GetLength(),
		Expected: expected, Describe: ref.GetDescribe(), CheckpointEvery: s.a.cfg.CheckpointEvery,
		KindFromContent: ref.GetKindFromContent(),
		// OpenUpload during a write answers what is durable so far.
		OnDurable: func(off int64) { ou.durable.Store(off) },
	})
	if err != nil {
		root.Close()
		return nil, err
	}
	ou.u = u
	ou.durable.Store(u.Offset())
	ou.used.Store(time.Now().UnixNano())
	ups.open[ref.GetJobId()] = ou
	s.a.log.Info("upload opened", "job", ref.GetJobId(), "fence", ref.GetFence(), "offset", u.Offset(), "resumed", u.Resumed())
	return ou, nil
}

// closeIdle releases the uploads nobody wrote to for idleUpload. Called
// with ups.mu held.
func (ups *uploads) closeIdle() {
	for id, ou := range ups.open {
		if time.Since(time.Unix(0, ou.used.Load())) > idleUpload && ou.mu.TryLock() {
			ou.close()
			ou.mu.Unlock()
			delete(ups.open, id)
		}
	}
}

// forget closes and drops the open upload of job id, if it is ou.
func (ups *uploads) forget(id string, ou *openUpload) {
	ups.mu.Lock()
	defer ups.mu.Unlock()
	if ups.open[id] == ou {
		delete(ups.open, id)
	}
	ou.close()
}

// closeAll closes every open upload at shutdown; their checkpoints stay.
func (ups *uploads) closeAll() {
	ups.mu.Lock()
	defer ups.mu.Unlock()
	for id, ou := range ups.open {
		ou.mu.Lock()
		ou.close()
		ou.mu.Unlock()
		delete(ups.open, id)
	}
}

// lockUpload returns the open upload ref names, locked for a write. One
// closed while the write waited for it (idle, taken over, cancelled) is
// opened again.
func (s *service) lockUpload(ref *agentv1.UploadRef) (*openUpload, error) {
	for range 3 {
		ou, err := s.upload(ref)
		if err != nil {
			return nil, err
		}
		ou.mu.Lock()
		if ou.u != nil {
			return ou, nil
		}
		ou.mu.Unlock()
	}
	return nil, errclass.New(errclass.Unavailable, "upload %s was closed while this write waited for it; try again", ref.GetJobId())
}

// OpenUpload reports the durable offset once no write is in progress: a
// write whose control plane gave up on it may still be making what it had
// received durable, and the offset a client is told must not move after.
func (s *service) OpenUpload(ctx context.Context, req *connect.Request[agentv1.OpenUploadRequest]) (*connect.Response[agentv1.OpenUploadResponse], error) {
	ou, err := s.lockUpload(req.Msg.GetUpload())
	if err != nil {
		return nil, errclass.ToConnect(err)
	}
	defer ou.mu.Unlock()
	return connect.NewResponse(&agentv1.OpenUploadResponse{Offset: ou.durable.Load()}), nil
}

// uploadBody is the body of an upload write (see uploadwire): it ends
// with io.EOF only when the control plane said the write is complete, in
// the trailer, and with ingest.ErrDropWrite when it asked for the write to
// be dropped.
type uploadBody struct {
	r        io.Reader
	trailer  http.Header // filled in once r has ended
	checksum string
}

func (b *uploadBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != io.EOF {
		return n, err
	}
	var end agentv1.WriteUploadRequest
	switch derr := uploadwire.Decode(b.trailer.Get(uploadwire.EndTrailer), &end); {
	case derr != nil || !end.GetEnd():
		return n, errors.New("the control plane ended the write without saying it was complete")
	case end.GetDrop():
		return n, ingest.ErrDropWrite
	}
	b.checksum = end.GetChecksum()
	return n, io.EOF
}

// serveUploadWrite serves one write of an upload (see uploadwire).
func (s *service) serveUploadWrite(w http.ResponseWriter, r *http.Request) {
	var start agentv1.WriteUploadRequest
	if err := uploadwire.Decode(r.Header.Get(uploadwire.StartHeader), &start); err != nil || start.GetUpload() == nil {
		uploadwire.WriteResponse(w, nil, errclass.New(errclass.InvalidArgument, "an upload write needs a valid %s header naming the upload", uploadwire.StartHeader))
		return
	}
	resp, err := s.writeUpload(&start, &uploadBody{r: r.Body, trailer: r.Trailer})
	uploadwire.WriteResponse(w, resp, err)
}

// writeUpload appends body to the upload start names, at start's offset,
// and finishes the upload when that completes it.
func (s *service) writeUpload(start *agentv1.WriteUploadRequest, body *uploadBody) (*agentv1.WriteUploadResponse, error) {
	ref := start.GetUpload()
	ou, err := s.lockUpload(ref)
	if err != nil {
		return nil, err
	}
	defer ou.mu.Unlock()
	defer ou.used.Store(time.Now().UnixNano())
	off, err := ou.u.Write(start.GetOffset(), body, start.GetAtomic())
	ou.durable.Store(off)
	resp := &agentv1.WriteUploadResponse{Offset: off}
	switch {
	case errors.Is(err, ingest.ErrDropWrite):
		return resp, nil
	case errors.Is(err, ingest.ErrFenced) || errors.Is(err, ingest.ErrTerminal):
		s.a.uploads.forget(ref.GetJobId(), ou)
		return nil, err
	case err != nil && errclass.Of(err) != nil:
		return nil, err
	case err != nil:
		// The stream broke; what arrived is kept. Nobody may be reading.
		return nil, errclass.Wrap(errclass.Transient, err, "the write broke off at %d bytes: %v", off, err)
	case off < ou.length:
		return resp, nil
	}
	res, err := s.finishUpload(ou, body.checksum)
	s.a.uploads.forget(ref.GetJobId(), ou)
	if err != nil {
		return nil, err
	}
	resp.Result = res
	s.a.log.Info("upload finished", "job", ref.GetJobId(), "dest", res.GetDest(), "bytes", res.GetSize(), "sha256", res.GetSha256())
	return resp, nil
}

// finishUpload verifies the complete upload and moves it into place; an
// ISO is described as discovery describes the ISOs it finds.
func (s *service) finishUpload(ou *openUpload, expected string) (*agentv1.UploadResult, error) {
	var want checksum.Digest
	if expected != "" {
		var err error
		if want, err = checksum.ParseDigest(expected); err != nil {
			return nil, errclass.Wrap(errclass.InvalidArgument, err, "%v", err)
		}
	}
	res, err := ou.u.Finish(want)
	if err != nil {
		return nil, err
	}
	out := &agentv1.UploadResult{Sha256: res.SHA256, Size: res.Size, Format: res.Format, VirtualSize: res.VirtualSize,
		Dest: res.Dest, Verified: res.Verified}
	if poolfs.IsISOPath(res.Dest) {
		f, err := s.a.isos.scanner.File(ou.root, ou.dir, res.Dest)
		if err != nil {
			return nil, errclass.New(errclass.Transient, "reading the uploaded ISO %s: %v", res.Dest, cause(err))
		}
		out.ModTime, out.Label, out.Bootable, out.Problem = timestamppb.New(f.ModTime), f.Label, f.Bootable, f.Problem
	} else if fi, err := ou.root.Stat(res.Dest); err == nil {
		out.ModTime = timestamppb.New(fi.ModTime())
	}
	return out, nil
}

func (s *service) CancelUpload(ctx context.Context, req *connect.Request[agentv1.CancelUploadRequest]) (*connect.Response[agentv1.CancelUploadResponse], error) {
	ups := s.a.uploads
	ups.mu.Lock()
	ou, ok := ups.open[req.Msg.GetJobId()]
	ups.mu.Unlock()
	if ok {
		// A write in progress ends when the control plane's stream does.
		ou.mu.Lock()
		ups.forget(req.Msg.GetJobId(), ou)
		ou.mu.Unlock()
	}
	if err := s.discardJob(req.Msg.GetPool(), req.Msg.GetJobId()); err != nil {
		return nil, errclass.ToConnect(err)
	}
	return connect.NewResponse(&agentv1.CancelUploadResponse{}), nil
}
