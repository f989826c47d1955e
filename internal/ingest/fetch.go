package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/urlpolicy"
)

// preflight is what a HEAD request told about the file.
type preflight struct {
	known     bool   // the HEAD succeeded; otherwise the GET tells
	total     int64  // -1: unknown
	validator string // "": none usable for If-Range
	noRanges  bool   // Accept-Ranges: none
	ranges    bool   // Accept-Ranges: bytes
}

func (d *download) newRequest(ctx context.Context, method string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, d.r.URL, nil)
	if err != nil {
		return nil, errclass.Wrap(errclass.InvalidArgument, err, "URL %q is not valid: %v", shorten(d.r.URL), err)
	}
	// Without this, Go's transport asks for gzip and decodes it on the
	// fly: lengths and ranges would then count compressed bytes.
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", "quarry-agent")
	return req, nil
}

// preflight asks the origin for size and validators with HEAD. A HEAD
// that fails or is refused (405, or 403 from URLs signed for GET only) is
// no error: the GET's headers say the same. Only a policy refusal or a
// cancelled ctx stop the download here.
func (d *download) preflight(ctx context.Context) (preflight, error) {
	unknown := preflight{total: -1}
	hctx, cancel := context.WithTimeout(ctx, d.r.StallTimeout)
	defer cancel()
	req, err := d.newRequest(hctx, http.MethodHead)
	if err != nil {
		return unknown, err
	}
	resp, err := d.r.Client.Do(req)
	if err != nil {
		if refused, ok := errors.AsType[*urlpolicy.RefusedError](err); ok {
			return unknown, errclass.Wrap(errclass.PolicyRefused, err, "download of %s: %v", d.r.URL, refused)
		}
		return unknown, ctx.Err() // nil unless cancelled: the GET retries
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return unknown, nil
	}
	return preflight{
		known:     true,
		total:     resp.ContentLength,
		validator: validator(resp.Header),
		noRanges:  strings.EqualFold(resp.Header.Get("Accept-Ranges"), "none"),
		ranges:    strings.EqualFold(resp.Header.Get("Accept-Ranges"), "bytes"),
	}, nil
}

// validator picks the If-Range value: a strong ETag, else Last-Modified.
// Weak ETags may not be used for ranges.
func validator(h http.Header) string {
	if etag := h.Get("ETag"); strings.HasPrefix(etag, `"`) {
		return etag
	}
	if lm := h.Get("Last-Modified"); lm != "" {
		if _, err := http.ParseTime(lm); err == nil {
			return lm
		}
	}
	return ""
}

// errComplete says the origin has no bytes past the offset: the partial
// file is whole.
var errComplete = errors.New("range starts at the end")

// attempt makes one GET and streams its body into the partial file. nil
// means the body ended; the caller checks the length.
func (d *download) attempt(ctx context.Context) error {
	if d.offset() > 0 && d.validator == "" {
		// Without a validator a range could splice two versions of the file.
		if err := d.restart(); err != nil {
			return err
		}
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer d.watch(actx, cancel)()

	req, err := d.newRequest(actx, http.MethodGet)
	if err != nil {
		return err
	}
	if d.offset() > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(d.offset(), 10)+"-")
		req.Header.Set("If-Range", d.validator)
	}
	resp, err := d.r.Client.Do(req)
	if err != nil {
		return d.classify(ctx, actx, err)
	}
	defer resp.Body.Close()
	switch err := d.accept(resp); {
	case errors.Is(err, errComplete):
		return nil
	case err != nil:
		return err
	}
	d.meter.conns = 1
	d.meter.phase(PhaseDownloading, d.offset(), d.total)
	return d.stream(ctx, actx, resp.Body)
}

// accept checks the response status and headers before its body is used,
// restarting from zero when the origin sends the whole file.
func (d *download) accept(resp *http.Response) error {
	code := resp.StatusCode
	switch {
	case code == http.StatusPartialContent:
		start, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != d.offset() || (total >= 0 && d.total >= 0 && total != d.total) {
			// The origin lies about ranges: trust nothing it sent so far.
			if err := d.restart(); err != nil {
				return err
			}
			return &transientError{msg: fmt.Sprintf("the origin answered a range request for byte %d with %q; downloading again from zero", start, resp.Header.Get("Content-Range"))}
		}
		if total >= 0 {
			d.total = total
		}
		return d.ensureSpace()
	case code == http.StatusOK:
		// Either the first request, or the origin's file changed (If-Range
		// failed) or it ignores ranges: all of it comes again.
		d.validator, d.total = validator(resp.Header), resp.ContentLength
		if d.offset() > 0 || d.resumed {
			if err := d.restart(); err != nil {
				return err
			}
		}
		return d.ensureSpace()
	case code == http.StatusRequestedRangeNotSatisfiable:
		_, total, _ := contentRange(resp.Header.Get("Content-Range"))
		if d.offset() > 0 && (d.total == d.offset() || total == d.offset()) {
			d.total = d.offset()
			return errComplete
		}
		if err := d.restart(); err != nil {
			return err
		}
		return &transientError{msg: fmt.Sprintf("the origin refused the range from byte %d (%s); downloading again from zero", d.offset(), resp.Status)}
	}
	return d.statusError(resp)
}

// statusError is the error of an answer that is not the file (or the part
// asked for): transient for a timeout, a rate limit or a server error (with
// the origin's Retry-After), terminal with what to do for another 4xx,
// transient for anything else.
func (d *download) statusError(resp *http.Response) error {
	code := resp.StatusCode
	switch {
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return &transientError{
			msg:        fmt.Sprintf("the origin answered %s for %s", resp.Status, d.r.URL),
			retryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
		}
	case code >= 400:
		return errclass.New(errclass.Terminal, "the origin answered %s for %s; %s", resp.Status, d.r.URL, statusAdvice(code))
	}
	return &transientError{msg: fmt.Sprintf("the origin answered %s for %s, which is not a download", resp.Status, d.r.URL)}
}

func statusAdvice(code int) string {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return "the file is not public; use a URL that needs no login"
	case http.StatusNotFound, http.StatusGone:
		return "check the URL: the file is not there (mirrors remove old releases)"
	}
	return "check the URL"
}

// classify turns a failed request or body read into a transient error,
// unless the policy refused it or the call was cancelled.
func (d *download) classify(ctx, actx context.Context, err error) error {
	if refused, ok := errors.AsType[*urlpolicy.RefusedError](err); ok {
		return errclass.Wrap(errclass.PolicyRefused, err, "download of %s: %v", d.r.URL, refused)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(context.Cause(actx), errStall) {
		return &transientError{msg: fmt.Sprintf("no data from the origin for %s (fewer than 64 KiB) at %s", d.r.StallTimeout, size(d.offset())), cause: errStall}
	}
	return &transientError{msg: fmt.Sprintf("fetching %s at %s: %v", d.r.URL, size(d.offset()), err), cause: err}
}

// contentRange parses "bytes START-END/TOTAL" (TOTAL may be *) and
// "bytes */TOTAL"; total is -1 when not given.
func contentRange(v string) (start, total int64, ok bool) {
	spec, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, -1, false
	}
	rng, tot, found := strings.Cut(spec, "/")
	if !found {
		return 0, -1, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t < 0 {
			return 0, -1, false
		}
		total = t
	}
	if rng == "*" {
		return -1, total, true
	}
	a, _, found := strings.Cut(rng, "-")
	start, err := strconv.ParseInt(a, 10, 64)
	if !found || err != nil || start < 0 {
		return 0, -1, false
	}
	return start, total, true
}

// retryAfter parses Retry-After: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(min(s, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
