package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
)

// hashChunk is how much HashFile reads at a time; hashProgressEvery is how
// often it reports progress.
const (
	hashChunk         = 1 << 20
	hashProgressEvery = 500 * time.Millisecond
)

// HashFile re-reads one image file of a pool through the pool root and
// streams progress, then its SHA-256: what `quarry image verify` compares
// with the digest recorded when the image was verified.
func (s *service) HashFile(ctx context.Context, req *connect.Request[agentv1.HashFileRequest], stream *connect.ServerStream[agentv1.HashFileResponse]) error {
	ref, dir, err := s.mountedDir(req.Msg.GetPool())
	if err != nil {
		return errclass.ToConnect(err)
	}
	rel := req.Msg.GetRelPath()
	if err := checkImagePath(rel); err != nil {
		return errclass.ToConnect(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "opening %s: %v", ref.path, cause(err)))
	}
	defer root.Close()
	f, err := root.Open(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return errclass.ToConnect(errclass.New(errclass.NotFound, "%s is not in pool %s on this node", rel, ref.name))
	}
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "opening %s in %s: %v", rel, ref.path, cause(err)))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "%s in %s: %v", rel, ref.path, cause(err)))
	}
	if !fi.Mode().IsRegular() {
		return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "%s in pool %s is not a regular file", rel, ref.name))
	}
	total := fi.Size()
	h := sha256.New()
	buf := make([]byte, hashChunk)
	start, last := time.Now(), time.Now()
	var done int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		done += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "reading %s in %s: %v", rel, ref.path, cause(err)))
		}
		if time.Since(last) >= hashProgressEvery {
			last = time.Now()
			if err := stream.Send(&agentv1.HashFileResponse{BytesDone: done, BytesTotal: total,
				BytesPerSecond: float64(done) / time.Since(start).Seconds()}); err != nil {
				return err
			}
		}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	s.a.log.Info("file hashed", "pool", ref.id, "path", rel, "bytes", done, "duration", time.Since(start).Round(time.Millisecond))
	return stream.Send(&agentv1.HashFileResponse{BytesDone: done, BytesTotal: max(total, done),
		BytesPerSecond: float64(done) / max(time.Since(start).Seconds(), 1e-9), Sha256: sum})
}
