package api

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"
)

// BoundedGzip is gzip for handlers whose messages may be at most limit
// bytes: inflating stops a little past the limit. connect-go's own gzip
// inflates a message that is too large to its end only to say how large it
// was, which a small request can make gigabytes.
func BoundedGzip(limit int64) connect.HandlerOption {
	return connect.WithCompression("gzip",
		func() connect.Decompressor { return &boundedGzip{limit: limit} },
		// The fastest level: responses are pages of a few tens of KiB,
		// and the default level cost a tenth of the CPU of a loaded
		// control plane for a few per cent of size.
		func() connect.Compressor {
			w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // a valid level
			return w
		})
}

type boundedGzip struct {
	limit int64
	n     int64
	r     *gzip.Reader
}

func (b *boundedGzip) Read(p []byte) (int, error) {
	if b.r == nil {
		return 0, io.EOF
	}
	if b.n > b.limit {
		return 0, fmt.Errorf("the inflated message passed %d bytes; stopped", b.limit)
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *boundedGzip) Reset(r io.Reader) error {
	b.n = 0
	if b.r == nil {
		gz, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		b.r = gz
		return nil
	}
	return b.r.Reset(r)
}

func (b *boundedGzip) Close() error {
	if b.r == nil {
		return errors.New("gzip reader closed before use")
	}
	return b.r.Close()
}
