package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/ingest"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/qemuimg"
)

// qemuFinder finds qemu-img and remembers it: a found one for good, a
// missing one for a minute (GetFacts asks every few seconds; an operator
// who installs qemu-utils sees the node report it soon after).
type qemuFinder struct {
	bin string

	mu      sync.Mutex
	tool    qemuimg.Tool
	err     error
	checked time.Time
}

func (q *qemuFinder) find(ctx context.Context) (qemuimg.Tool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.tool.Path != "" || (q.err != nil && time.Since(q.checked) < time.Minute) {
		return q.tool, q.err
	}
	q.tool, q.err = qemuimg.Find(ctx, q.bin)
	q.checked = time.Now()
	return q.tool, q.err
}

// conversions are the ConvertFile calls running, by job: a second call for
// a job (the control plane restarted and took the job up again) stops the
// first and waits until it has removed its partial file, which the second
// one then writes anew.
type conversions struct {
	mu      sync.Mutex
	running map[string]*conversion
}

type conversion struct {
	stop context.CancelFunc
	done chan struct{}
}

// begin registers a call for job and returns its context and the function
// that ends it.
func (c *conversions) begin(ctx context.Context, job string) (context.Context, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		old := c.running[job]
		if old == nil {
			break
		}
		c.mu.Unlock()
		old.stop()
		<-old.done
		c.mu.Lock()
	}
	if c.running == nil {
		c.running = map[string]*conversion{}
	}
	ctx, cancel := context.WithCancel(ctx)
	cv := &conversion{stop: cancel, done: make(chan struct{})}
	c.running[job] = cv
	return ctx, func() {
		cancel()
		c.mu.Lock()
		if c.running[job] == cv {
			delete(c.running, job)
		}
		c.mu.Unlock()
		close(cv.done)
	}
}

// ConvertFile converts one image file of a pool with qemu-img into a
// partial file, checks a qcow2 result with qemu-img check, hashes it, and
// moves it into place. The call ending (a cancel) kills qemu-img and
// removes the partial file; so does any failure.
func (s *service) ConvertFile(ctx context.Context, req *connect.Request[agentv1.ConvertFileRequest], stream *connect.ServerStream[agentv1.ConvertFileResponse]) error {
	m := req.Msg
	ref, dir, err := s.mountedDir(m.GetPool())
	if err != nil {
		return errclass.ToConnect(err)
	}
	for _, p := range []string{m.GetSrc(), m.GetDest()} {
		if err := checkImagePath(p); err != nil {
			return errclass.ToConnect(err)
		}
	}
	if err := qemuimg.CheckPair(m.GetSrcFormat(), m.GetFormat()); err != nil {
		return errclass.ToConnect(errclass.New(errclass.InvalidArgument, "%v", err))
	}
	partial, err := ingest.PartialPath(m.GetJobId())
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.InvalidArgument, "job id: %v", err))
	}
	ctx, end := s.a.conversions.begin(ctx, m.GetJobId())
	defer end()
	q, err := s.a.qemu.find(ctx)
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "node %s cannot convert: %v", s.a.hostname, err))
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "opening %s: %v", ref.path, cause(err)))
	}
	defer root.Close()
	src, err := root.Open(m.GetSrc())
	if errors.Is(err, fs.ErrNotExist) {
		return errclass.ToConnect(errclass.New(errclass.NotFound, "%s is not in pool %s on this node", m.GetSrc(), ref.name))
	}
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "opening %s in %s: %v", m.GetSrc(), ref.path, cause(err)))
	}
	defer src.Close()
	if _, err := root.Lstat(m.GetDest()); err == nil {
		if m.GetAdoptExisting() {
			return s.adoptConverted(ctx, q, root, dir, ref, m, stream)
		}
		return errclass.ToConnect(errclass.New(errclass.Conflict, "pool %s already holds %s; delete it or choose another name", ref.name, m.GetDest()))
	}
	info, err := q.Info(ctx, m.GetSrcFormat(), src)
	if err == nil {
		err = info.SelfContained()
	}
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.Terminal, "%s in pool %s: %v", m.GetSrc(), ref.name, err))
	}
	// The partial file's directory is Quarry's own; it must be a real
	// directory inside the pool, as qemu-img writes by path.
	if err := root.MkdirAll(poolfs.PartialDir, 0o755); err != nil {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "creating %s in %s: %v", poolfs.PartialDir, ref.path, cause(err)))
	}
	if fi, err := root.Lstat(poolfs.PartialDir); err != nil || !fi.IsDir() {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "%s in %s is not a directory", poolfs.PartialDir, ref.path))
	}
	placed := false
	defer func() {
		if !placed {
			root.Remove(partial)
		}
	}()
	root.Remove(partial) // what an earlier, interrupted run of the job left

	start := time.Now()
	var last time.Time
	var sendErr error
	err = q.Convert(ctx, m.GetSrcFormat(), src, m.GetFormat(), dir+"/"+partial, func(pct float64) {
		if sendErr == nil && (time.Since(last) >= hashProgressEvery || pct >= 100) {
			last = time.Now()
			sendErr = stream.Send(&agentv1.ConvertFileResponse{Phase: "converting", Percent: pct})
		}
	})
	if err == nil {
		err = sendErr
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errclass.ToConnect(errclass.New(errclass.Terminal, "converting %s to %s: %v", m.GetSrc(), m.GetFormat(), err))
	}
	res, err := describeConverted(ctx, q, root, dir, partial, m.GetFormat(), stream)
	if err != nil {
		return err
	}
	res.Dest = m.GetDest()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ingest.Place(root, partial, m.GetDest(), "pool "+ref.name); err != nil {
		if errclass.Of(err) == nil {
			err = errclass.New(errclass.FailedPrecondition, "moving the converted file to %s: %v", m.GetDest(), cause(err))
		}
		return errclass.ToConnect(err)
	}
	placed = true
	if fi, err := root.Stat(m.GetDest()); err == nil {
		res.ModTime = timestamppb.New(fi.ModTime())
	}
	s.a.log.Info("image converted", "pool", ref.id, "src", m.GetSrc(), "dest", m.GetDest(), "format", res.Format,
		"bytes", res.Size, "duration", time.Since(start).Round(time.Millisecond))
	return stream.Send(&agentv1.ConvertFileResponse{Phase: "done", Percent: 100, BytesDone: res.Size, BytesTotal: res.Size, Result: res})
}

// describeConverted checks a converted file at rel (qemu-img check for
// qcow2), hashes it, reads its header, which must say format, and syncs
// it: the result, but for Dest and ModTime.
func describeConverted(ctx context.Context, q qemuimg.Tool, root *os.Root, dir, rel, format string, stream *connect.ServerStream[agentv1.ConvertFileResponse]) (*agentv1.ConvertResult, error) {
	res := &agentv1.ConvertResult{}
	var err error
	if format == "qcow2" {
		if err := stream.Send(&agentv1.ConvertFileResponse{Phase: "checking", Percent: 100}); err != nil {
			return nil, err
		}
		if res.Check, err = q.Check(ctx, "qcow2", dir+"/"+rel); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, errclass.ToConnect(errclass.New(errclass.Terminal, "the converted file failed its check: %v", err))
		}
	}
	f, err := root.OpenFile(rel, os.O_RDWR, 0)
	if err != nil {
		return nil, errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "opening the converted file: %v", cause(err)))
	}
	defer f.Close()
	if res.Sha256, res.Size, err = hashConverted(ctx, f, stream); err != nil {
		return nil, err
	}
	if res.Format, res.VirtualSize, err = ingest.Sniff(f, res.Size); err != nil {
		return nil, errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "reading the header of the converted file: %v", cause(err)))
	}
	switch {
	case format == "raw":
		// Raw bytes are the guest's disk, whatever they look like (a disk
		// holding an ISO 9660 file system sniffs as an ISO).
		res.Format, res.VirtualSize = "raw", res.Size
	case res.Format != format:
		return nil, errclass.ToConnect(errclass.New(errclass.Terminal, "the converted file is %s, not %s", res.Format, format))
	}
	if err := f.Sync(); err != nil {
		return nil, errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "syncing the converted file: %v", cause(err)))
	}
	return res, nil
}

// adoptConverted answers for the file a previous run of the job put in
// place before its result reached the control plane (which restarted, or
// lost this node): checked and hashed as if just converted.
func (s *service) adoptConverted(ctx context.Context, q qemuimg.Tool, root *os.Root, dir string, ref poolRef, m *agentv1.ConvertFileRequest, stream *connect.ServerStream[agentv1.ConvertFileResponse]) error {
	fi, err := root.Lstat(m.GetDest())
	if err != nil || !fi.Mode().IsRegular() {
		return errclass.ToConnect(errclass.New(errclass.Conflict, "pool %s already holds %s, not a regular file; delete it or choose another name", ref.name, m.GetDest()))
	}
	res, err := describeConverted(ctx, q, root, dir, m.GetDest(), m.GetFormat(), stream)
	if err != nil {
		return err
	}
	res.Dest, res.ModTime = m.GetDest(), timestamppb.New(fi.ModTime())
	res.Check = strings.TrimPrefix(strings.Join([]string{"taken over from an earlier run of the job", res.Check}, "; "), "; ")
	s.a.log.Info("converted image taken over", "pool", ref.id, "dest", m.GetDest(), "format", res.Format, "bytes", res.Size)
	return stream.Send(&agentv1.ConvertFileResponse{Phase: "done", Percent: 100, BytesDone: res.Size, BytesTotal: res.Size, Result: res})
}

// hashConverted reads the converted file once for its SHA-256, reporting
// progress.
func hashConverted(ctx context.Context, f *os.File, stream *connect.ServerStream[agentv1.ConvertFileResponse]) (string, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", 0, errclass.ToConnect(err)
	}
	total := fi.Size()
	h := sha256.New()
	buf := make([]byte, hashChunk)
	var done int64
	last := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return "", 0, err
		}
		n, err := f.ReadAt(buf, done)
		h.Write(buf[:n])
		done += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", 0, errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "reading the converted file: %v", cause(err)))
		}
		if time.Since(last) >= hashProgressEvery {
			last = time.Now()
			if err := stream.Send(&agentv1.ConvertFileResponse{Phase: "hashing", Percent: 100, BytesDone: done, BytesTotal: total}); err != nil {
				return "", 0, err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), done, nil
}
