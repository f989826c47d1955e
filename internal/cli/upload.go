package cli

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/bytesize"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/uploadwire"
)

// checksumTrailer carries the sha256 of the whole file, computed while
// sending, with the write that completes an upload (upload.ChecksumTrailer).
const checksumTrailer = "Quarry-Checksum"

func newImageUploadCommand(g *globals) *cobra.Command {
	var o uploadOptions
	cmd := &cobra.Command{
		Use:   "upload FILE --pool NAME [--name NAME] [--checksum sha256:HEX] [--kind iso|disk] [--no-resume]",
		Short: "Upload a local file into a pool: streamed to the node, resumable, verified",
		Long: `Upload a local file into a pool through the control plane, which streams it to a node that
mounts the pool (tus protocol at /uploads/). The sha256 of the file is computed while it is sent
and checked by the node, unless --checksum gives the expected digest. Interrupted (Ctrl-C, a
dropped connection), the same command run again resumes where the node's durable copy ends:
the upload URL is remembered per file path, size and modification time in the user's cache
directory. --no-resume starts over.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			o.file = args[0]
			u := &uploader{c: c, o: o, out: cmd.OutOrStdout(), errw: cmd.ErrOrStderr(), asJSON: g.wantJSON(),
				hc: &http.Client{}}
			return u.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.pool, "pool", "", "pool to upload into (name or id)")
	f.StringVar(&o.name, "name", "", "image name (default: the file's name)")
	f.StringVar(&o.checksum, "checksum", "", "expected digest, sha256:HEX or sha512:HEX (default: the sha256 computed while sending)")
	f.StringVar(&o.kind, "kind", "", "iso or disk (default: the name guesses, the file's bytes decide when it ends)")
	f.BoolVar(&o.noResume, "no-resume", false, "start over instead of resuming an earlier upload of this file")
	_ = cmd.MarkFlagRequired("pool")
	return cmd
}

type uploadOptions struct {
	file, pool, name, checksum, kind string
	noResume                         bool
}

type uploader struct {
	c      *clients
	o      uploadOptions
	hc     *http.Client
	out    io.Writer
	errw   io.Writer
	asJSON bool

	f    *os.File
	size int64
	key  string
	url  string
	sent atomic.Int64 // bytes of the file the node has or that were sent
}

func (u *uploader) run(ctx context.Context) error {
	f, err := os.Open(u.o.file)
	if err != nil {
		return usageErrorf("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return usageErrorf("%s is not a regular file", u.o.file)
	}
	u.f, u.size = f, st.Size()
	abs, _ := filepath.Abs(u.o.file)
	u.key = fmt.Sprintf("%s|%s|%d|%d", u.c.base, abs, st.Size(), st.ModTime().UnixNano())
	name := u.o.name
	if name == "" {
		name = filepath.Base(u.o.file)
	}
	pool, err := resolvePool(ctx, u.c.pools, u.o.pool)
	if err != nil {
		return err
	}

	off := int64(-1)
	if prev := loadResume(u.key); prev != "" {
		if u.o.noResume {
			u.request(ctx, "DELETE", prev, nil, nil) // best effort: its partial file goes
			saveResume(u.key, "")
		} else if o, err := u.head(ctx, prev); err == nil {
			u.url, off = prev, o
			if !u.asJSON {
				fmt.Fprintf(u.errw, "resuming the upload of %s at %s (byte %d) of %s\n", name, bytesize.Format(uint64(o)), o, bytesize.Format(uint64(u.size)))
			}
		}
	}
	if u.url == "" {
		if u.url, err = u.create(ctx, name, pool.GetId()); err != nil {
			return err
		}
		saveResume(u.key, u.url)
		off = 0
	}
	if err := u.send(ctx, off); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("upload stopped after sending %s (%d bytes) of %s; run the same command again to resume",
				bytesize.Format(uint64(u.sent.Load())), u.sent.Load(), bytesize.Format(uint64(u.size)))
		}
		return err
	}
	saveResume(u.key, "")
	return u.report(ctx, pool.GetName())
}

func (u *uploader) create(ctx context.Context, name, poolID string) (string, error) {
	meta := []string{"filename " + b64(name), "pool " + b64(poolID)}
	if u.o.kind != "" {
		meta = append(meta, "kind "+b64(u.o.kind))
	}
	if u.o.checksum != "" {
		meta = append(meta, "checksum "+b64(u.o.checksum))
	}
	resp, err := u.request(ctx, "POST", u.c.base+"/uploads/", nil, map[string]string{
		"Upload-Length": strconv.FormatInt(u.size, 10), "Upload-Metadata": strings.Join(meta, ","),
	})
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusCreated {
		return "", statusError(resp)
	}
	loc := resp.Header.Get("Location")
	if strings.HasPrefix(loc, "/") {
		loc = u.c.base + loc
	}
	return loc, nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func (u *uploader) head(ctx context.Context, url string) (int64, error) {
	resp, err := u.request(ctx, "HEAD", url, nil, nil)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, statusError(resp)
	}
	return strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
}

func (u *uploader) request(ctx context.Context, method, url string, body io.Reader, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	u.authorize(req)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := u.hc.Do(req)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp, nil
}

// authorize sets the headers of every tus request. The token is set here
// rather than by a transport that clones requests: the clone would not
// see the trailer set once the body has ended.
func (u *uploader) authorize(req *http.Request) {
	req.Header.Set("Tus-Resumable", "1.0.0")
	if u.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+u.c.token)
	}
}

// statusError turns a refusal into an error of the matching class, so
// that the exit code says what happened.
func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(resp.Body)
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
	}
	code := map[int]connect.Code{
		400: connect.CodeInvalidArgument, 401: connect.CodeUnauthenticated, 403: connect.CodePermissionDenied,
		404: connect.CodeNotFound, 409: connect.CodeAborted, 410: connect.CodeNotFound, 412: connect.CodeFailedPrecondition,
		413: connect.CodeInvalidArgument, 415: connect.CodeInvalidArgument, 422: connect.CodeFailedPrecondition,
		429: connect.CodeResourceExhausted, 460: connect.CodeDataLoss, 503: connect.CodeUnavailable, 507: connect.CodeResourceExhausted,
	}[resp.StatusCode]
	if code == 0 {
		code = connect.CodeUnknown
	}
	return connect.NewError(code, errors.New(msg))
}

// retryable says a failed write may go on after a HEAD: the connection
// broke, the node was away, or another write was still ending.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeAborted, connect.CodeUnknown, connect.CodeDataLoss:
		return true
	}
	return false
}

// send sends the file from off to its end, going on after failures a
// retry may fix (from the offset the node holds) until one makes no
// progress ten times in a row. The sha256 of the whole file goes with
// the last write, unless --checksum gave one.
func (u *uploader) send(ctx context.Context, off int64) error {
	var h hash.Hash
	hashed := int64(0)
	if u.o.checksum == "" {
		h = sha256.New()
	}
	view := u.progress(ctx)
	defer view()
	fails, backoff := 0, time.Second
	for {
		u.sent.Store(off)
		if h != nil && hashed != off {
			// Resuming: the bytes the node holds are hashed from the file.
			if hashed > off {
				h.Reset()
				hashed = 0
			}
			if _, err := io.Copy(h, io.NewSectionReader(u.f, hashed, off-hashed)); err != nil {
				return err
			}
			hashed = off
		}
		err := u.patch(ctx, off, h, &hashed)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !retryable(err) {
			return err
		}
		prev := off
		var herr error
		for range 30 {
			if off, herr = u.head(ctx, u.url); herr == nil || !retryable(herr) || ctx.Err() != nil {
				break
			}
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
		}
		if herr != nil {
			return herr
		}
		if off == u.size {
			return nil // the node had it all; the HEAD finished it
		}
		if off > prev {
			fails, backoff = 0, time.Second
		} else if fails++; fails >= 10 {
			return fmt.Errorf("%w (10 attempts in a row made no progress; run the command again to resume)", err)
		}
		if !u.asJSON {
			fmt.Fprintf(u.errw, "\nthe upload broke off (%v); resuming at %s\n", err, bytesize.Format(uint64(off)))
		}
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// sendBlock is how much of the file a PATCH reads, hashes and writes at
// a time: large writes keep the system calls and chunk headers per GiB
// few (net/http would copy the body 32 KiB at a time).
const sendBlock = 1 << 20

// fileBody is the part of the file a PATCH sends, hashed (when h is set)
// and counted into sent as it is read.
type fileBody struct {
	r      *io.SectionReader
	h      hash.Hash
	hashed *int64
	sent   *atomic.Int64
	// atEOF, if set, is called once the file has ended, before the client
	// sends the trailers.
	atEOF func()
}

func (b *fileBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		if b.h != nil {
			b.h.Write(p[:n])
			*b.hashed += int64(n)
		}
		b.sent.Add(int64(n))
	}
	if err == io.EOF && b.atEOF != nil {
		b.atEOF()
		b.atEOF = nil
	}
	return n, err
}

// WriteTo is what net/http's copy of the body uses: it writes sendBlock
// bytes at a time.
func (b *fileBody) WriteTo(w io.Writer) (int64, error) {
	return uploadwire.WriteBlocks(w, b, sendBlock)
}

// patch sends the rest of the file from off in one write.
func (u *uploader) patch(ctx context.Context, off int64, h hash.Hash, hashed *int64) error {
	body := &fileBody{r: io.NewSectionReader(u.f, off, u.size-off), h: h, hashed: hashed, sent: &u.sent}
	req, err := http.NewRequestWithContext(ctx, "PATCH", u.url, body)
	if err != nil {
		return err
	}
	u.authorize(req)
	req.Header.Set("Upload-Offset", strconv.FormatInt(off, 10))
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	req.ContentLength = u.size - off
	if h != nil {
		// Trailers need a chunked body; the digest is known only at its end.
		req.ContentLength = -1
		req.Trailer = http.Header{checksumTrailer: nil}
		body.atEOF = func() { req.Trailer.Set(checksumTrailer, "sha256:"+hex.EncodeToString(h.Sum(nil))) }
	}
	resp, err := u.hc.Do(req)
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return statusError(resp)
	}
	return nil
}

// progress shows the bytes sent with the bar (or lines) the CLI uses for
// every job, until the returned function is called.
func (u *uploader) progress(ctx context.Context) func() {
	if u.asJSON {
		return func() {}
	}
	view := newProgressView(u.errw)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		last, lastAt, rate := u.sent.Load(), time.Now(), 0.0
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				n := u.sent.Load()
				if r := float64(n-last) / now.Sub(lastAt).Seconds(); rate == 0 {
					rate = r
				} else {
					rate = 0.8*rate + 0.2*r
				}
				last, lastAt = n, now
				j := &quarryv1.Job{State: quarryv1.JobState_JOB_STATE_RUNNING, Progress: &quarryv1.JobProgress{
					Phase: "uploading", BytesDone: uint64(n), BytesTotal: uint64(u.size), BytesPerSecond: max(rate, 0)}}
				if n >= u.size {
					j.Progress.Phase = "verifying"
				} else if rate > 0 {
					j.Progress.EtaSeconds = int64(float64(u.size-n) / rate)
				}
				view.update(j)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		view.end(u.sent.Load() >= u.size && ctx.Err() == nil)
	}
}

// report prints the image the upload made.
func (u *uploader) report(ctx context.Context, poolName string) error {
	id := u.url[strings.LastIndex(u.url, "/")+1:]
	j, err := u.c.jobs.GetJob(ctx, connect.NewRequest(&quarryv1.GetJobRequest{Id: id}))
	if err != nil {
		return err
	}
	im, err := u.c.images.GetImage(ctx, connect.NewRequest(&quarryv1.GetImageRequest{Id: j.Msg.GetJob().GetImageId()}))
	if err != nil {
		return err
	}
	if u.asJSON {
		return printJSON(u.out, im.Msg)
	}
	m := im.Msg.GetImage()
	fmt.Fprintln(u.out, j.Msg.GetJob().GetMessage())
	fmt.Fprintf(u.out, "image %s is %s in pool %s: %s, %s\n", m.GetName(), enumWord(m.GetState()), poolName,
		bytesize.Format(m.GetSizeBytes()), m.GetDigest())
	return nil
}

// The upload URLs to resume, per server, file path, size and mtime, in
// <user cache dir>/quarry/uploads.json.
func resumePath() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "quarry", "uploads.json")
}

func loadResumes() map[string]string {
	m := map[string]string{}
	if p := resumePath(); p != "" {
		if b, err := os.ReadFile(p); err == nil {
			json.Unmarshal(b, &m)
		}
	}
	return m
}

func loadResume(key string) string { return loadResumes()[key] }

// saveResume remembers url for key, or forgets key when url is empty.
// Failing to remember only costs a fresh upload next time.
func saveResume(key, url string) {
	p := resumePath()
	if p == "" {
		return
	}
	m := loadResumes()
	if url == "" {
		delete(m, key)
	} else {
		m[key] = url
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if os.MkdirAll(filepath.Dir(p), 0o700) != nil {
		return
	}
	tmp := p + ".tmp-" + strconv.Itoa(os.Getpid())
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, p)
	}
}
