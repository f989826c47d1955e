// Package uploadwire is the wire format of an upload's writes from the
// control plane to a node: one HTTP/1.1 request per client write, on the
// node's mutual-TLS listener, where only the control plane's certificate
// is accepted (as for the AgentService). The request's body is the bytes
// themselves, chunked, without message framing: the control plane streams
// the client's body through, and the node reads it straight into its
// write buffers. (HTTP/2, as the AgentService uses, would add framing,
// flow control and two copies on each side.)
//
//   - POST Path, header StartHeader: a WriteUploadRequest with upload,
//     offset and atomic (binary protobuf, then base64).
//   - The body: the bytes to append at offset.
//   - Trailer EndTrailer: a WriteUploadRequest with end (always), drop and
//     checksum, encoded the same way. A body that ends without it broke
//     off: the node keeps what arrived (unless the write is atomic).
//   - The answer: 200 with a WriteUploadResponse (application/proto), or
//     ErrorStatus with an ErrorInfo: the error's class and message, which
//     ReadResponse turns back into an error of that class (errclass).
package uploadwire

import (
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
)

const (
	// Path is where a node accepts an upload's writes.
	Path = "/upload/v1/write"
	// StartHeader and EndTrailer carry the write's first and last
	// WriteUploadRequest, without data.
	StartHeader = "Quarry-Upload-Start"
	EndTrailer  = "Quarry-Upload-End"
	// ErrorStatus is the status of an answer that is an ErrorInfo.
	ErrorStatus = http.StatusUnprocessableEntity

	protoType = "application/proto"
	// maxAnswer bounds what ReadResponse reads of an answer.
	maxAnswer = 1 << 20
)

// Encode returns m as a header value.
func Encode(m *agentv1.WriteUploadRequest) (string, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Decode reads a header value made by Encode into m. An empty value is an
// error: the header or trailer is missing.
func Decode(v string, m *agentv1.WriteUploadRequest) error {
	if v == "" {
		return errors.New("missing")
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}

// WriteResponse answers a write with resp, or with err when it is not nil.
func WriteResponse(w http.ResponseWriter, resp *agentv1.WriteUploadResponse, err error) {
	status := http.StatusOK
	var m proto.Message = resp
	if err != nil {
		info := &agentv1.ErrorInfo{Message: err.Error(), Class: errclass.Wire(err)}
		status, m = ErrorStatus, info
	}
	b, merr := proto.Marshal(m)
	if merr != nil {
		http.Error(w, merr.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", protoType)
	w.WriteHeader(status)
	w.Write(b)
}

// ReadResponse reads a node's answer to a write. An error the node
// answered with comes back with its class and message; an answer that is
// not one of the node's (a proxy's, a refusal before the handler) is an
// error of class Unavailable.
func ReadResponse(resp *http.Response) (*agentv1.WriteUploadResponse, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, errclass.Wrap(errclass.Unavailable, err, "reading the node's answer to an upload write: %v", err)
	}
	isProto := resp.Header.Get("Content-Type") == protoType
	switch {
	case resp.StatusCode == http.StatusOK && isProto:
		out := &agentv1.WriteUploadResponse{}
		if err := proto.Unmarshal(b, out); err != nil {
			return nil, errclass.Wrap(errclass.Unavailable, err, "the node's answer to an upload write is not readable: %v", err)
		}
		return out, nil
	case resp.StatusCode == ErrorStatus && isProto:
		info := &agentv1.ErrorInfo{}
		if err := proto.Unmarshal(b, info); err != nil {
			return nil, errclass.Wrap(errclass.Unavailable, err, "the node's answer to an upload write is not readable: %v", err)
		}
		return nil, errclass.FromWire(info.GetClass(), info.GetMessage())
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
	}
	return nil, errclass.New(errclass.Unavailable, "the node answered an upload write with %s: %s", resp.Status, msg)
}

// WriteBlocks copies r to w in writes of block bytes (fewer at r's end):
// the WriteTo of an upload's request bodies, the CLI's and the control
// plane's, so that net/http's copy of 32 KiB does not decide how many
// system calls and TLS records a write costs. It returns the bytes written.
func WriteBlocks(w io.Writer, r io.Reader, block int) (int64, error) {
	buf := make([]byte, block)
	var total int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return total, nil
		case err != nil:
			return total, err
		}
	}
}
