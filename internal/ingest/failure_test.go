package ingest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quarry-project/quarry/internal/origintest"
	"github.com/quarry-project/quarry/internal/urlpolicy"
)

func TestWrongBytesFailAfterOneFreshAttempt(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 4 * mib
	f := o.Add("/a.img", origintest.Random(n, 21))
	f.WrongBytes(n / 2)
	p := newPool(t, "")
	r := request(p, f)
	r.Expected = sha256Digest(f)
	_, err := Download(t.Context(), r)
	if !errors.Is(err, ErrChecksum) || !errors.Is(err, ErrTerminal) {
		t.Fatalf("error %v; want ErrChecksum", err)
	}
	want := "checksum mismatch: expected sha256:" + f.SHA256() + ", got sha256:"
	tail := "; the file at " + f.URL() + " is not the one the checksum names (check the URL or the checksum)"
	if msg := err.Error(); !strings.HasPrefix(msg, want) || !strings.HasSuffix(msg, tail) {
		t.Fatalf("message %q", msg)
	}
	if served := f.BytesServedOnceIdle(t); served != 2*n {
		t.Fatalf("served %d bytes; want the file twice (%d)", served, 2*n)
	}
	p.checkNoImages(t)
	p.checkNoPartial(t)
}

func TestOriginErrors(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	for _, tt := range []struct {
		name       string
		code       int
		times      int
		retryAfter time.Duration
		terminal   string // message part if the download must fail for good
	}{
		{"404", http.StatusNotFound, 100, 0, "the origin answered 404 Not Found for "},
		{"403", http.StatusForbidden, 100, 0, "the file is not public"},
		{"500 three times", http.StatusInternalServerError, 3, 0, ""},
		{"503 twice", http.StatusServiceUnavailable, 2, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := o.Add("/"+strings.ReplaceAll(tt.name, " ", "-"), origintest.Random(mib, 22))
			f.Status(tt.code, tt.times, tt.retryAfter)
			p := newPool(t, "")
			r := request(p, f)
			res, err := Download(t.Context(), r)
			if tt.terminal != "" {
				if !errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), tt.terminal) {
					t.Fatalf("error %v; want a terminal one saying %q", err, tt.terminal)
				}
				if f.Requests() > 2 {
					t.Fatalf("%d requests; a terminal answer must not be retried", f.Requests())
				}
				p.checkNoPartial(t)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p.checkImage(t, r.Dest, f)
			if res.FetchedBytes != mib {
				t.Fatalf("fetched %d bytes", res.FetchedBytes)
			}
		})
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/a.img", origintest.Random(mib, 23))
	f.Status(http.StatusTooManyRequests, 2, time.Second) // the HEAD and the first GET
	p := newPool(t, "")
	r := request(p, f)
	start := time.Now()
	if _, err := Download(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	// Backoff alone would retry after about 10 ms.
	if d := time.Since(start); d < time.Second {
		t.Fatalf("retried after %v; the origin asked for 1 s", d)
	}
	p.checkImage(t, r.Dest, f)
}

func TestGivingUpKeepsThePartialFile(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	const n = 4 * mib
	f := o.Add("/a.img", origintest.Random(n, 24))
	p := newPool(t, "")
	r := request(p, f)
	r.MaxAttempts = 3
	interrupted(t, p, r, f, mib)
	f.Status(http.StatusBadGateway, 100, 0)
	_, err := Download(t.Context(), r)
	if err == nil || errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), "failed 3 times in a row") {
		t.Fatalf("error %v; want a transient one after 3 attempts", err)
	}
	ck, _ := readCheckpoint(p.root, r.Job)
	if ck == nil || ck.Offset < mib {
		t.Fatalf("checkpoint %+v; want the progress kept", ck)
	}
	f.Clear()
	res, err := Download(t.Context(), r)
	if err != nil || !res.Resumed {
		t.Fatalf("after the origin recovered: %+v, %v", res, err)
	}
	p.checkImage(t, r.Dest, f)
}

func TestPolicyRefusal(t *testing.T) {
	t.Parallel()
	p := newPool(t, "")
	r := Request{
		Job: "job-1", URL: "http://169.254.169.254/latest/meta-data/disk.img", Root: p.root,
		Dest: "images/x.img", Client: client(),
	}
	start := time.Now()
	_, err := Download(t.Context(), r)
	if !errors.Is(err, urlpolicy.ErrRefused) || !errors.Is(err, ErrTerminal) {
		t.Fatalf("error %v; want a terminal policy refusal", err)
	}
	if !strings.Contains(err.Error(), "link-local/cloud-metadata address") {
		t.Fatalf("message %q does not say why", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refusal took %v", d)
	}
	p.checkNoPartial(t)
}

func TestCancelBeforeStart(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/a.img", origintest.Random(mib, 25))
	p := newPool(t, "")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Download(ctx, request(p, f))
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTerminal) {
		t.Fatalf("error %v; want context.Canceled", err)
	}
}

func TestRedirects(t *testing.T) {
	t.Parallel()
	o := origintest.New(t)
	f := o.Add("/mirror/a.img", origintest.Random(mib, 26))
	o.Redirect("/latest.img", "/mirror/a.img")
	o.Redirect("/sneaky.img", "http://169.254.169.254/latest/meta-data/")

	p := newPool(t, "")
	r := request(p, f)
	r.URL = o.URL("/latest.img")
	if _, err := Download(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	p.checkImage(t, r.Dest, f)

	r.URL, r.Dest = o.URL("/sneaky.img"), "images/other.img"
	_, err := Download(t.Context(), r)
	if !errors.Is(err, urlpolicy.ErrRefused) || !errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), "redirect from "+r.URL) {
		t.Fatalf("error %v; want a terminal refusal of the redirect", err)
	}
	p.checkNoPartial(t)
}
