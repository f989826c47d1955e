package agent

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/qemuimg/qemutest"
)

// TestConvertFile: the facts say which qemu-img the node has; a
// conversion lands in place with its digest and header, and bad requests
// are refused with the right class, leaving nothing behind.
func TestConvertFile(t *testing.T) {
	q := qemutest.Require(t)
	root := t.TempDir()
	pool := filepath.Join(root, "srv/pool")
	writeMarkerFile(t, pool, "p1", "p1")
	mkdir(t, filepath.Join(pool, "images"))
	raw := bytes.Repeat([]byte{1, 2, 3, 0}, 1<<18) // 1 MiB
	if err := os.WriteFile(filepath.Join(pool, "images/d.raw"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(q.Path, "create", "-f", "qcow2", "-b", filepath.Join(pool, "images/d.raw"), "-F", "raw",
		filepath.Join(pool, "images/overlay.qcow2")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, args := range [][]string{
		{"convert", "-f", "raw", "-O", "vmdk", filepath.Join(pool, "images/d.raw"), filepath.Join(pool, "images/d.vmdk")},
		{"convert", "-f", "raw", "-O", "vhdx", filepath.Join(pool, "images/d.raw"), filepath.Join(pool, "images/d.vhdx")},
	} {
		if out, err := exec.Command(q.Path, args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v: %s", args, err, out)
		}
	}
	// A vmdk whose data is another file, named by an absolute path: qemu-img
	// would read whatever that is.
	desc := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n" +
		"RW 2048 FLAT \"" + filepath.Join(pool, "images/d.raw") + "\" 0\n\nddb.adapterType = \"ide\"\n"
	if err := os.WriteFile(filepath.Join(pool, "images/flat.vmdk"), []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	p := ref("p1", "/srv/pool")
	a := startAgent(t, Config{FSRoot: root})
	c := protocols[1].client(t, a)

	facts, err := c.GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{}))
	if err != nil || facts.Msg.GetQemuImgVersion() != q.Version {
		t.Fatalf("GetFacts = %v, %v; want qemu-img %s", facts, err, q.Version)
	}
	convert := func(src, dest, from, to string, adopt ...bool) (*agentv1.ConvertResult, error) {
		stream, err := c.ConvertFile(t.Context(), connect.NewRequest(&agentv1.ConvertFileRequest{
			JobId: "job-1", Pool: p, Src: src, Dest: dest, SrcFormat: from, Format: to, AdoptExisting: len(adopt) > 0}))
		if err != nil {
			return nil, err
		}
		defer stream.Close()
		var res *agentv1.ConvertResult
		for stream.Receive() {
			if r := stream.Msg().GetResult(); r != nil {
				res = r
			}
		}
		return res, stream.Err()
	}
	res, err := convert("images/d.raw", "images/sub/d.qcow2", "raw", "qcow2")
	if err != nil || res.GetFormat() != "qcow2" || res.GetVirtualSize() != int64(len(raw)) || len(res.GetSha256()) != 64 ||
		!strings.Contains(res.GetCheck(), "no errors") || res.GetDest() != "images/sub/d.qcow2" {
		t.Fatalf("ConvertFile = %v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(pool, "images/sub/d.qcow2")); err != nil {
		t.Errorf("the result is not in place: %v", err)
	}
	// Asked again for the same job (its result was lost): the file in
	// place is taken over, not converted again nor refused.
	again, err := convert("images/d.raw", "images/sub/d.qcow2", "raw", "qcow2", true)
	if err != nil || again.GetSha256() != res.GetSha256() || !strings.Contains(again.GetCheck(), "taken over") {
		t.Errorf("ConvertFile again with adopt_existing = %v, %v; want the same file taken over", again, err)
	}
	for _, from := range []string{"vmdk", "vhdx"} {
		res, err := convert("images/d."+from, "images/from-"+from+".qcow2", from, "qcow2")
		if err != nil || res.GetFormat() != "qcow2" || res.GetVirtualSize() != int64(len(raw)) {
			t.Errorf("%s to qcow2: %v, %v", from, res, err)
		}
	}

	for _, tt := range []struct {
		name                string
		src, dest, from, to string
		code                connect.Code
		msg                 string
	}{
		{"taken destination", "images/d.raw", "images/sub/d.qcow2", "raw", "qcow2", connect.CodeAlreadyExists, "already holds"},
		{"unsupported pair", "images/d.raw", "images/x.vmdk", "raw", "vmdk", connect.CodeInvalidArgument, "Quarry converts"},
		{"outside the pool", "../../etc/passwd", "images/x.qcow2", "raw", "qcow2", connect.CodeInvalidArgument, "file path"},
		{"missing source", "images/nope.raw", "images/x.qcow2", "raw", "qcow2", connect.CodeNotFound, "not in pool"},
		{"backing file", "images/overlay.qcow2", "images/x.raw", "qcow2", "raw", connect.CodeFailedPrecondition, "backing file"},
		{"vmdk extent elsewhere", "images/flat.vmdk", "images/x.qcow2", "vmdk", "qcow2", connect.CodeFailedPrecondition, "keeps data in another file"},
		{"wrong recorded format", "images/d.raw", "images/x.raw", "qcow2", "raw", connect.CodeFailedPrecondition, "qemu-img"},
	} {
		_, err := convert(tt.src, tt.dest, tt.from, tt.to)
		if connect.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: %v; want %v mentioning %q", tt.name, err, tt.code, tt.msg)
		}
	}
	if left := dirNames(t, filepath.Join(pool, ".quarry/partial")); len(left) != 0 {
		t.Errorf(".quarry/partial holds %v", left)
	}
	if _, err := os.Stat(filepath.Join(pool, "images/x.raw")); !os.IsNotExist(err) {
		t.Errorf("a refused conversion left images/x.raw: %v", err)
	}

	// A node without qemu-img says so in its facts and refuses.
	b := startAgent(t, Config{FSRoot: root, QemuImg: filepath.Join(root, "no-qemu-img")})
	cb := protocols[1].client(t, b)
	facts, err = cb.GetFacts(t.Context(), connect.NewRequest(&agentv1.GetFactsRequest{}))
	if err != nil || facts.Msg.GetQemuImgVersion() != "" {
		t.Errorf("GetFacts without qemu-img = %v, %v", facts, err)
	}
	stream, err := cb.ConvertFile(t.Context(), connect.NewRequest(&agentv1.ConvertFileRequest{
		JobId: "job-2", Pool: p, Src: "images/d.raw", Dest: "images/y.qcow2", SrcFormat: "raw", Format: "qcow2"}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
	}
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "qemu-utils") {
		t.Errorf("ConvertFile without qemu-img: %v; want failed_precondition naming qemu-utils", err)
	}
}
