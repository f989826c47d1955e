package refresh

import (
	"context"
	"fmt"
	"net/http"
	"path"
	"time"

	"github.com/quarry-project/quarry/internal/catalog"
	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/store"
)

// upstream is what one check learned about an entry's file.
type upstream struct {
	// NotModified: the origin answered 304 to the current build's
	// validators.
	NotModified  bool
	ETag         string
	LastModified string
	// Digest is what the entry's checksum file lists for the file now
	// ("sha256:<hex>"); "" when the entry has no checksum file.
	Digest string
}

// ask sends a conditional HEAD for the entry's file, with the validators
// the current build was fetched with, and reads the entry's checksum file.
func ask(ctx context.Context, client *http.Client, e catalog.Entry, cur store.CatalogBuild) (upstream, error) {
	resp, err := conditional(ctx, client, http.MethodHead, e.URL, cur)
	if err == nil && (resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented) {
		// A mirror that refuses HEAD: the first byte of a GET says as much.
		resp, err = conditional(ctx, client, http.MethodGet, e.URL, cur)
	}
	if err != nil {
		return upstream{}, fmt.Errorf("asking %s: %w", e.URL, err)
	}
	var up upstream
	switch {
	case resp.StatusCode == http.StatusNotModified:
		up = upstream{NotModified: true, ETag: cur.ETag, LastModified: cur.LastModified}
		// A 304 may carry fresher validators; they describe the same file.
		if v := resp.Header.Get("ETag"); v != "" {
			up.ETag = v
		}
		if v := resp.Header.Get("Last-Modified"); v != "" {
			up.LastModified = v
		}
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent:
		up = upstream{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return upstream{}, fmt.Errorf("%s answered %s: the file moved or was withdrawn; fix the entry's url in a --catalog file", e.URL, resp.Status)
	default:
		return upstream{}, fmt.Errorf("%s answered %s", e.URL, resp.Status)
	}
	if e.ChecksumURL != "" {
		d, err := checksum.Lookup(ctx, client, e.ChecksumURL, path.Base(urlPath(e.URL)))
		if err != nil {
			return upstream{}, err
		}
		up.Digest = d.String()
	}
	return up, nil
}

// conditional sends one request for url with the validators of cur, and
// closes the body: only the headers matter (a GET asks for one byte).
func conditional(ctx context.Context, client *http.Client, method, url string, cur store.CatalogBuild) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	if cur.ETag != "" {
		req.Header.Set("If-None-Match", cur.ETag)
	}
	if cur.LastModified != "" {
		req.Header.Set("If-Modified-Since", cur.LastModified)
	}
	if method == http.MethodGet {
		req.Header.Set("Range", "bytes=0-0")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// changedFrom says whether upstream holds another build than cur (whose
// image is im), and why, in words for the status. The checksum file
// decides when there is one: a file re-served with new validators but the
// same digest is the same build. Without one, new validators mean a new
// build. A build adopted from a plain download has no validators yet: only
// its digest can tell, else its first check just learns them.
func (up upstream) changedFrom(cur store.CatalogBuild, im store.Image) (bool, string) {
	digest := cur.Digest
	if digest == "" && im.SHA256 != "" {
		digest = "sha256:" + im.SHA256
	}
	if up.Digest != "" {
		have, err1 := checksum.ParseDigest(digest)
		want, err2 := checksum.ParseDigest(up.Digest)
		if err1 == nil && err2 == nil && have.Algo == want.Algo {
			if have.Hex != want.Hex {
				return true, "the checksum file lists " + short(up.Digest) + ", the current build is " + short(digest)
			}
			return false, "unchanged: the checksum file lists the current build's digest" + notModified(up)
		}
	}
	switch {
	case up.NotModified:
		return false, "unchanged (304 Not Modified)"
	case cur.ETag == "" && cur.LastModified == "":
		return false, "unchanged as far as can be told: the current build's validators were not known, and are now"
	case up.ETag != "" && cur.ETag != "" && up.ETag != cur.ETag:
		return true, "ETag " + cur.ETag + " → " + up.ETag
	case up.LastModified != "" && cur.LastModified != "" && up.LastModified != cur.LastModified:
		return true, "Last-Modified " + cur.LastModified + " → " + up.LastModified
	}
	return false, "unchanged: same validators"
}

func notModified(up upstream) string {
	if up.NotModified {
		return " (304 Not Modified)"
	}
	return ""
}

// short shortens a digest for messages: "sha256:0123456789ab…".
func short(d string) string {
	if len(d) > 19 {
		return d[:19] + "…"
	}
	return d
}

// builtAt is the build's date by upstream, zero when it did not say.
func (up upstream) builtAt() time.Time {
	t, err := http.ParseTime(up.LastModified)
	if err != nil {
		return time.Time{}
	}
	return t
}
