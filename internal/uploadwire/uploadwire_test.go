package uploadwire

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
)

func TestEncodeDecode(t *testing.T) {
	in := &agentv1.WriteUploadRequest{Upload: &agentv1.UploadRef{JobId: "j1", Fence: 3, Length: 10}, Offset: 4, Atomic: true}
	v, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	var out agentv1.WriteUploadRequest
	if err := Decode(v, &out); err != nil || !proto.Equal(in, &out) {
		t.Fatalf("Decode(Encode(%v)) = %v, %v", in, &out, err)
	}
	for _, bad := range []string{"", "not base64!", "AAAA"} {
		if err := Decode(bad, &out); err == nil {
			t.Errorf("Decode(%q) = nil; want an error", bad)
		}
	}
}

// answer runs WriteResponse and reads it back with ReadResponse.
func answer(t *testing.T, resp *agentv1.WriteUploadResponse, err error) (*agentv1.WriteUploadResponse, error) {
	t.Helper()
	rec := httptest.NewRecorder()
	WriteResponse(rec, resp, err)
	return ReadResponse(rec.Result())
}

func TestResponses(t *testing.T) {
	want := &agentv1.WriteUploadResponse{Offset: 42, Result: &agentv1.UploadResult{Sha256: "ab", Size: 42}}
	got, err := answer(t, want, nil)
	if err != nil || !proto.Equal(got, want) {
		t.Fatalf("answer %v = %v, %v", want, got, err)
	}

	// A node's error keeps its class and message.
	_, err = answer(t, nil, errclass.New(errclass.Fenced, "taken over by fence 4"))
	if !errors.Is(err, errclass.Fenced) || err.Error() != "taken over by fence 4" {
		t.Errorf("fenced answer: %v (class %v)", err, errclass.Of(err))
	}
	// One without a class stays without.
	_, err = answer(t, nil, errors.New("disk on fire"))
	if err == nil || errclass.Of(err) != nil || err.Error() != "disk on fire" {
		t.Errorf("classless answer: %v (class %v)", err, errclass.Of(err))
	}

	// An answer that is not the node's (a refusal before the handler, an
	// agent without the endpoint) is Unavailable and says what came.
	rec := httptest.NewRecorder()
	http.Error(rec, "404 page not found", http.StatusNotFound)
	_, err = ReadResponse(rec.Result())
	if !errors.Is(err, errclass.Unavailable) || !strings.Contains(err.Error(), "404 page not found") {
		t.Errorf("foreign answer: %v", err)
	}
}
