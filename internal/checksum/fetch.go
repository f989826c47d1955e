package checksum

import (
	"context"
	"fmt"
	"net/http"

	"github.com/quarry-project/quarry/internal/errclass"
)

// maxFileBytes bounds a checksum file read from an origin; real ones are a
// few kilobytes, Fedora's and Ubuntu's directory-wide ones tens.
const maxFileBytes = 1 << 20

// Lookup fetches the checksum file at sumsURL with client and returns the
// digest it lists for fileName (see FindIn). An origin that is down or
// busy (5xx, 429, no answer) is a plain error, worth trying again; any
// other refusal and a file without the name are errclass.InvalidArgument.
func Lookup(ctx context.Context, client *http.Client, sumsURL, fileName string) (Digest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sumsURL, nil)
	if err != nil {
		return Digest{}, fmt.Errorf("checksum file URL %s: %w", sumsURL, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Digest{}, fmt.Errorf("fetching the checksum file %s: %w", sumsURL, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return Digest{}, fmt.Errorf("fetching the checksum file %s: %s", sumsURL, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return Digest{}, errclass.New(errclass.InvalidArgument, "fetching the checksum file %s: %s; check the URL or give --checksum", sumsURL, resp.Status)
	}
	entries, err := Parse(resp.Body, maxFileBytes)
	if err != nil {
		return Digest{}, errclass.Wrap(errclass.InvalidArgument, err, "reading the checksum file %s: %v", sumsURL, err)
	}
	e, err := FindIn(sumsURL, entries, fileName)
	if err != nil {
		return Digest{}, errclass.Wrap(errclass.InvalidArgument, err, "%v", err)
	}
	return e.Digest(), nil
}
