// Package upload runs uploads on the control plane: it is the tus.Backend
// behind /uploads/. An upload is a job (kind "upload") with its image
// (origin uploaded, UPLOADING → VERIFYING → READY or ERROR), created in one
// transaction on the node the node-choice helper picks with the upload's
// length as the space it needs. The control plane stores no byte of it:
// each client write streams through to the node's agent, which writes,
// hashes and checkpoints it in the pool's .quarry/partial/ like a
// download, and the offset a client is told is the node's durable one.
//
// The contract:
//   - Only the token that created an upload, or an admin, may see, write
//     or end it.
//   - One write per upload at a time; a second one is refused (409).
//   - A node that holds the partial file and cannot be reached: on a
//     shared pool the upload moves to another node that mounts it (higher
//     fence, same partial file); otherwise the client gets a retryable 503
//     until the node is back.
//   - An upload not touched for Expiry fails and its partial file is
//     removed; cancelling its job (JobService) is termination.
package upload

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quarry-project/quarry/internal/bytesize"
	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/names"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/placement"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/tus"
)

// Kind is the job kind of uploads.
const Kind = "upload"

// ChecksumTrailer is the request trailer a client may send with the
// write that completes an upload: the expected digest of the whole file
// ("sha256:<hex>"), computed while sending. It counts when the upload was
// created without a checksum.
const ChecksumTrailer = "Quarry-Checksum"

// ErrGone classes uploads that ended (failed, cancelled, expired): tus
// answers 410.
var ErrGone = errclass.New(errclass.NotFound, "the upload has ended")

// Agents is what the service needs of the node link.
type Agents interface {
	OpenUpload(ctx context.Context, nodeID string, ref *agentv1.UploadRef) (int64, error)
	WriteUpload(ctx context.Context, nodeID string, w nodelink.UploadWrite) (*agentv1.WriteUploadResponse, error)
	CancelUpload(ctx context.Context, nodeID, jobID string, pool store.Pool) error
}

// Caller is who makes a request.
type Caller struct {
	TokenID string
	Admin   bool
}

// Config configures a Service.
type Config struct {
	Store   store.Store
	Chooser *placement.Chooser
	Agents  Agents
	// Caller returns the authenticated caller of a request's context.
	Caller func(ctx context.Context) (Caller, bool)
	// Expiry: an upload not touched for this long is removed (24 h).
	Expiry time.Duration
	// PerNode and Global bound the uploads in progress at once (4, 16).
	PerNode, Global int
	Logger          *slog.Logger
	Now             func() time.Time
}

// Service is the tus backend.
type Service struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	writing map[string]*write // jobs with a write in progress
}

// write is a client's write in progress.
type write struct {
	stop context.CancelFunc
	done chan struct{} // closed once it ended and what arrived is durable
}

// takeOver stops the write in progress on upload id, if any, and waits
// until it has ended. A client asks for the offset (HEAD) or writes only
// when it has no write of its own running: one still in progress belongs
// to a connection the client gave up on, however slowly the server is
// still reading what that connection had sent (as tus servers do).
func (s *Service) takeOver(ctx context.Context, id string) error {
	s.mu.Lock()
	w := s.writing[id]
	s.mu.Unlock()
	if w == nil {
		return nil
	}
	w.stop()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var _ tus.Backend = (*Service)(nil)

// New returns a Service; Run expires idle uploads.
func New(cfg Config) *Service {
	if cfg.Expiry <= 0 {
		cfg.Expiry = 24 * time.Hour
	}
	if cfg.PerNode <= 0 {
		cfg.PerNode = 4
	}
	if cfg.Global <= 0 {
		cfg.Global = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, log: cfg.Logger.With("component", "upload"), writing: map[string]*write{}}
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "job-" + hex.EncodeToString(b)
}

// request is what a creation asks for, from its metadata.
type request struct {
	name     string
	pool     store.Pool
	iso      bool
	checksum string
	// fromContent: no kind was given, so iso comes from the name and the
	// file's content has the last word when it ends.
	fromContent bool
}

func first(m tus.Metadata, keys ...string) string {
	for _, k := range keys {
		if v := m[k]; v != "" {
			return v
		}
	}
	return ""
}

func (s *Service) parse(ctx context.Context, meta tus.Metadata) (request, error) {
	var r request
	r.name = first(meta, "filename", "name")
	if r.name == "" {
		return r, errclass.New(errclass.InvalidArgument, "the upload's metadata needs filename: the image's file name")
	}
	if err := names.Check("image", r.name); err != nil {
		return r, errclass.New(errclass.InvalidArgument, "%v; give another filename", err)
	}
	pool := first(meta, "pool", "storagePoolId")
	if pool == "" {
		return r, errclass.New(errclass.InvalidArgument, "the upload's metadata needs pool: the id or name of the pool (see quarry pool ls)")
	}
	p, err := s.cfg.Store.GetPool(ctx, pool)
	if errors.Is(err, store.ErrNotFound) {
		p, err = s.cfg.Store.GetPoolByName(ctx, pool)
	}
	if errors.Is(err, store.ErrNotFound) {
		return r, errclass.New(errclass.NotFound, "no pool has id or name %q; see quarry pool ls", pool)
	}
	if err != nil {
		return r, err
	}
	r.pool = p
	switch k := strings.ToLower(meta["kind"]); k {
	case "iso":
		r.iso = true
	case "disk":
	case "":
		r.iso, r.fromContent = strings.EqualFold(path.Ext(r.name), ".iso"), true
	default:
		return r, errclass.New(errclass.InvalidArgument, "kind %q is not iso or disk", k)
	}
	if c := meta["checksum"]; c != "" {
		d, err := checksum.ParseDigest(c)
		if err != nil {
			return r, errclass.New(errclass.InvalidArgument, "checksum: %v", err)
		}
		r.checksum = d.String()
	}
	return r, nil
}

// Create registers an upload: image UPLOADING and job RUNNING on the node
// the node-choice helper picked, whose agent then opens the partial file
// (checking and reserving the space).
func (s *Service) Create(ctx context.Context, length int64, meta tus.Metadata) (tus.Upload, error) {
	caller, ok := s.cfg.Caller(ctx)
	if !ok {
		return tus.Upload{}, errclass.New(errclass.Unauthenticated, "an upload needs a token")
	}
	r, err := s.parse(ctx, meta)
	if err != nil {
		return tus.Upload{}, err
	}
	ims, err := s.cfg.Store.ListImages(ctx, store.ImageFilter{PoolID: r.pool.ID})
	if err != nil {
		return tus.Upload{}, err
	}
	dest := poolfs.ImagePath(r.name, r.iso)
	for _, im := range ims {
		if (im.Name == r.name || im.RelPath == dest) && !(im.State == store.ImageError && im.SHA256 == "") {
			return tus.Upload{}, errclass.New(errclass.Conflict, "pool %s already has image %s (%s) at %s; remove it with quarry image rm %s, or upload under another name",
				r.pool.Name, im.Name, im.State, im.RelPath, im.ID)
		}
	}
	node, err := s.place(ctx, r.pool, length)
	if err != nil {
		return tus.Upload{}, err
	}
	now := s.cfg.Now()
	im := store.Image{ID: "img-" + newID()[4:], PoolID: r.pool.ID, Name: r.name, Kind: store.KindDisk, State: store.ImageUploading,
		RelPath: dest, SizeBytes: length, Origin: store.OriginUploaded, CreatedAt: now, UpdatedAt: now}
	if r.iso {
		im.Kind, im.Format = store.KindISO, "iso"
	}
	id := newID()
	j := store.Job{ID: id, Kind: Kind, State: store.JobQueued, ImageID: im.ID, PoolID: r.pool.ID, Source: "upload:" + id,
		Checksum: r.checksum, Owner: caller.TokenID, KindFromContent: r.fromContent, BytesTotal: length, Phase: "uploading",
		Message: "waiting for the first bytes", CreatedAt: now, UpdatedAt: now}
	if _, err := s.cfg.Store.CreateDownload(ctx, im, j); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return tus.Upload{}, errclass.New(errclass.Conflict, "pool %s already has an image at %s; remove it with quarry image rm, or upload under another name", r.pool.Name, dest)
		}
		return tus.Upload{}, err
	}
	if j, err = s.cfg.Store.ClaimJob(ctx, id, node.ID, now); err != nil {
		return tus.Upload{}, err
	}
	j.Message, j.Phase, j.BytesTotal = "waiting for the first bytes on node "+node.Name, "uploading", length
	if err := s.cfg.Store.UpdateJob(ctx, j); err != nil {
		return tus.Upload{}, err
	}
	s.event(ctx, id, fmt.Sprintf("upload of %s (%s) into pool %s created by token %s; node %s holds it",
		r.name, bytesize.Format(uint64(length)), r.pool.Name, caller.TokenID, node.Name))
	if _, err := s.cfg.Agents.OpenUpload(ctx, node.ID, s.ref(j, r.pool, node, im.RelPath)); err != nil {
		// Refused before any byte (no space on the node after all): the
		// job keeps the reason, the library gets no image.
		ctx := context.WithoutCancel(ctx)
		s.fail(ctx, j, err)
		if derr := s.cfg.Store.DeleteImage(ctx, im.ID); derr != nil {
			s.log.Warn("removing the image of a refused upload", "job", id, "err", derr)
		}
		return tus.Upload{}, err
	}
	s.log.Info("upload created", "job", id, "pool", r.pool.Name, "node", node.Name, "name", r.name, "bytes", length)
	return tus.Upload{ID: id, Length: length, Metadata: meta, Expires: now.Add(s.cfg.Expiry)}, nil
}

// place chooses the node for a new upload: the node-choice helper's first
// node with room for length bytes and a free upload slot.
func (s *Service) place(ctx context.Context, pool store.Pool, length int64) (store.Node, error) {
	active, err := s.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}})
	if err != nil {
		return store.Node{}, err
	}
	perNode, total := map[string]int{}, 0
	for _, j := range active {
		if j.Kind == Kind {
			perNode[j.NodeID]++
			total++
		}
	}
	if total >= s.cfg.Global {
		return store.Node{}, errclass.New(errclass.RateLimited, "%d uploads are in progress, as many as the control plane takes at once (quarry server --max-uploads); try again when one ends", total)
	}
	choice, err := s.cfg.Chooser.ChooseFor(ctx, pool.ID, placement.Need{Bytes: length})
	if err != nil {
		return store.Node{}, err
	}
	for _, c := range choice.Kept {
		if perNode[c.Node.ID] < s.cfg.PerNode {
			return c.Node, nil
		}
	}
	return store.Node{}, errclass.New(errclass.RateLimited, "every node that can take pool %s has %d uploads in progress (quarry server --max-uploads-per-node); try again when one ends", pool.Name, s.cfg.PerNode)
}

func (s *Service) ref(j store.Job, pool store.Pool, n store.Node, dest string) *agentv1.UploadRef {
	return &agentv1.UploadRef{JobId: j.ID, Fence: j.Fence, Pool: &agentv1.PoolRef{Id: pool.ID, Name: pool.Name, Path: pool.Path},
		Dest: dest, Length: j.BytesTotal, Checksum: j.Checksum, Describe: fmt.Sprintf("pool %s on node %s", pool.Name, n.Name),
		KindFromContent: j.KindFromContent}
}

// upload is one upload's records, as a request sees them.
type upload struct {
	j    store.Job
	im   store.Image
	pool store.Pool
	node store.Node
}

// load reads the upload's records and checks that the caller may touch
// it, and that it has not ended or expired.
func (s *Service) load(ctx context.Context, id string) (upload, error) {
	var u upload
	caller, ok := s.cfg.Caller(ctx)
	if !ok {
		return u, errclass.New(errclass.Unauthenticated, "an upload needs a token")
	}
	j, err := s.cfg.Store.GetJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && j.Kind != Kind {
		return u, errclass.New(errclass.NotFound, "no upload has id %q", id)
	}
	if err != nil {
		return u, err
	}
	if j.Owner != caller.TokenID && !caller.Admin {
		return u, errclass.New(errclass.PermissionDenied, "upload %s belongs to another token; only that token or an admin may use it", id)
	}
	u.j = j
	if u.pool, err = s.cfg.Store.GetPool(ctx, j.PoolID); err != nil {
		return u, err
	}
	if u.im, err = s.cfg.Store.GetImage(ctx, j.ImageID); err != nil && j.State.Active() {
		return u, err
	}
	switch {
	case j.State == store.JobSucceeded:
		return u, nil
	case !j.State.Active():
		return u, errclass.New(ErrGone, "upload %s has ended (%s): %s", id, strings.ToLower(string(j.State)), j.Message)
	case s.cfg.Now().Sub(j.UpdatedAt) > s.cfg.Expiry && !s.busy(id):
		s.expire(ctx, j, u.pool)
		return u, errclass.New(ErrGone, "upload %s expired: nothing was sent for %v", id, s.cfg.Expiry)
	}
	if u.node, err = s.cfg.Store.GetNode(ctx, j.NodeID); err != nil {
		return u, err
	}
	return u, nil
}

func (s *Service) busy(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writing[id] != nil
}

// Get returns the upload with the node's durable offset, moving it to
// another node of a shared pool when its node is lost. A complete upload
// whose end the control plane missed is finished now.
func (s *Service) Get(ctx context.Context, id string) (tus.Upload, error) {
	u, err := s.load(ctx, id)
	if err != nil {
		return tus.Upload{}, err
	}
	if u.j.State == store.JobSucceeded {
		return s.view(u.j, u.j.BytesTotal), nil
	}
	// A client that lost its connection asks at once: the write it left
	// behind ends here, and the offset is what it made durable.
	if err := s.takeOver(ctx, id); err != nil {
		return tus.Upload{}, err
	}
	off, err := s.open(ctx, &u)
	if err != nil {
		return tus.Upload{}, err
	}
	if off == u.j.BytesTotal && !s.busy(id) {
		// The last write reached the node but not its answer (a restart):
		// finish now, with an empty write.
		if _, err := s.Write(ctx, id, tus.Patch{Offset: off, Body: strings.NewReader("")}); err != nil {
			return tus.Upload{}, err
		}
	} else if off != u.j.BytesDone {
		u.j.BytesDone, u.j.UpdatedAt = off, s.cfg.Now()
		s.save(ctx, &u.j)
	}
	return s.view(u.j, off), nil
}

func (s *Service) view(j store.Job, off int64) tus.Upload {
	up := tus.Upload{ID: j.ID, Offset: off, Length: j.BytesTotal}
	if j.State.Active() {
		up.Expires = j.UpdatedAt.Add(s.cfg.Expiry)
	}
	return up
}

// open asks the upload's node for its durable offset; on a shared pool a
// lost node's upload moves to another node that mounts the pool.
func (s *Service) open(ctx context.Context, u *upload) (int64, error) {
	off, err := s.cfg.Agents.OpenUpload(ctx, u.node.ID, s.ref(u.j, u.pool, u.node, u.im.RelPath))
	if err == nil || !errors.Is(err, errclass.Unavailable) && !errors.Is(err, errclass.FailedPrecondition) {
		return off, err
	}
	lost := err
	if !u.pool.Shared {
		return 0, errclass.Wrap(errclass.Unavailable, lost, "node %s, which holds this upload's partial file, cannot be reached (%v) and pool %s is only on it; try again once it is back",
			u.node.Name, lost, u.pool.Name)
	}
	choice, err := s.cfg.Chooser.Choose(ctx, u.pool.ID)
	if err != nil {
		return 0, errclass.Wrap(errclass.Unavailable, lost, "node %s, which holds this upload, cannot be reached (%v), and no other node can take it over: %v; try again later", u.node.Name, lost, err)
	}
	for _, c := range choice.Kept {
		if c.Node.ID == u.node.ID {
			continue
		}
		claimed, err := s.cfg.Store.ClaimJob(ctx, u.j.ID, c.Node.ID, s.cfg.Now())
		if err != nil {
			return 0, err
		}
		off, err := s.cfg.Agents.OpenUpload(ctx, c.Node.ID, s.ref(claimed, u.pool, c.Node, u.im.RelPath))
		if err != nil {
			s.log.Info("a node could not take over an upload", "job", u.j.ID, "node", c.Node.Name, "err", err)
			u.j = claimed
			continue
		}
		msg := fmt.Sprintf("node %s was lost; moved to node %s, resuming from the partial file at %s", u.node.Name, c.Node.Name, bytesize.Format(uint64(off)))
		s.event(ctx, u.j.ID, msg)
		s.log.Info("upload moved", "job", u.j.ID, "from", u.node.Name, "to", c.Node.Name, "offset", off)
		u.j, u.node = claimed, c.Node
		u.j.Message, u.j.BytesDone = msg, off
		s.save(ctx, &u.j)
		return off, nil
	}
	return 0, errclass.Wrap(errclass.Unavailable, lost, "node %s, which holds this upload, cannot be reached (%v), and no other node could take it over; try again later", u.node.Name, lost)
}

// counter counts the bytes of a write as they pass.
type counter struct {
	r io.Reader
	n atomic.Int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Write streams one client write to the upload's node, saving the job's
// progress every second, and finishes the upload when the write completes
// it.
func (s *Service) Write(ctx context.Context, id string, p tus.Patch) (tus.Upload, error) {
	u, err := s.load(ctx, id)
	if err != nil {
		return tus.Upload{}, err
	}
	if u.j.State == store.JobSucceeded {
		return tus.Upload{}, errclass.New(errclass.Conflict, "upload %s is complete already", id)
	}
	var w *write
	for w == nil {
		if err := s.takeOver(ctx, id); err != nil {
			return tus.Upload{}, err
		}
		s.mu.Lock()
		if s.writing[id] == nil { // nobody else took over meanwhile
			w = &write{done: make(chan struct{})}
			ctx, w.stop = context.WithCancel(ctx)
			s.writing[id] = w
		}
		s.mu.Unlock()
	}
	defer w.stop()
	defer func() {
		s.mu.Lock()
		delete(s.writing, id)
		s.mu.Unlock()
		close(w.done)
	}()

	body := &counter{r: p.Body}
	stop := s.progress(ctx, &u, p.Offset, body)
	resp, err := s.cfg.Agents.WriteUpload(ctx, u.node.ID, nodelink.UploadWrite{
		Ref: s.ref(u.j, u.pool, u.node, u.im.RelPath), Offset: p.Offset, Atomic: p.Atomic, Body: body,
		Drop: func(err error) bool { return errors.Is(err, tus.ErrChecksumMismatch) },
		Checksum: func() string {
			if p.Offset+body.n.Load() == u.j.BytesTotal {
				s.verifying(context.WithoutCancel(ctx), u)
			}
			if p.Trailer != nil {
				return p.Trailer.Get(ChecksumTrailer)
			}
			return ""
		},
	})
	stop()
	ctx = context.WithoutCancel(ctx) // the records must follow what the node did
	if err != nil {
		if j, gerr := s.cfg.Store.GetJob(ctx, id); gerr == nil {
			u.j = j
		}
		switch {
		case errors.Is(err, errclass.ChecksumMismatch), errors.Is(err, errclass.NoSpace):
			s.fail(ctx, u.j, err)
		case body.n.Load() > 0:
			u.j.Message, u.j.BytesPerSec, u.j.UpdatedAt = fmt.Sprintf("the write broke off: %v; the client resumes from the offset node %s holds", err, u.node.Name), 0, s.cfg.Now()
			s.save(ctx, &u.j)
		}
		return tus.Upload{}, err
	}
	if j, gerr := s.cfg.Store.GetJob(ctx, id); gerr == nil {
		u.j = j
	}
	if res := resp.GetResult(); res != nil {
		if err := s.succeed(ctx, u, res); err != nil {
			return tus.Upload{}, err
		}
		u.j.State = store.JobSucceeded
		return s.view(u.j, resp.GetOffset()), nil
	}
	u.j.BytesDone, u.j.BytesPerSec, u.j.UpdatedAt = resp.GetOffset(), 0, s.cfg.Now()
	u.j.Message = fmt.Sprintf("%s of %s on node %s; waiting for the client", bytesize.Format(uint64(resp.GetOffset())), bytesize.Format(uint64(u.j.BytesTotal)), u.node.Name)
	s.save(ctx, &u.j)
	return s.view(u.j, resp.GetOffset()), nil
}

// progress saves the bytes passed and the rate once a second while a
// write streams; the returned function stops it.
func (s *Service) progress(ctx context.Context, u *upload, start int64, body *counter) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, lastAt, rate := int64(0), time.Now(), 0.0
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				n := body.n.Load()
				r := float64(n-last) / now.Sub(lastAt).Seconds()
				rate = 0.7*rate + 0.3*r
				if last == 0 {
					rate = r
				}
				last, lastAt = n, now
				j, err := s.cfg.Store.GetJob(ctx, u.j.ID)
				if err != nil || !j.State.Active() {
					continue
				}
				j.BytesDone, j.BytesPerSec, j.Phase, j.UpdatedAt = start+n, rate, "uploading", s.cfg.Now()
				j.Message = "uploading through node " + u.node.Name
				s.save(ctx, &j)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// verifying marks the image VERIFYING once the last byte has passed.
func (s *Service) verifying(ctx context.Context, u upload) {
	im, err := s.cfg.Store.GetImage(ctx, u.im.ID)
	if err != nil {
		return
	}
	im.State, im.UpdatedAt = store.ImageVerifying, s.cfg.Now()
	s.cfg.Store.UpdateImage(ctx, im)
	if j, err := s.cfg.Store.GetJob(ctx, u.j.ID); err == nil {
		j.Phase, j.BytesDone, j.Message, j.UpdatedAt = "verifying", j.BytesTotal, "verifying on node "+u.node.Name, s.cfg.Now()
		s.save(ctx, &j)
	}
}

func (s *Service) save(ctx context.Context, j *store.Job) {
	if err := s.cfg.Store.UpdateJob(ctx, *j); err != nil && ctx.Err() == nil {
		s.log.Info("saving an upload's progress", "job", j.ID, "err", err)
	}
}

func (s *Service) event(ctx context.Context, jobID, msg string) {
	if err := s.cfg.Store.AppendJobEvent(ctx, store.JobEvent{JobID: jobID, Time: s.cfg.Now(), Message: msg}); err != nil && ctx.Err() == nil {
		s.log.Warn("recording a job event", "job", jobID, "err", err)
	}
}
