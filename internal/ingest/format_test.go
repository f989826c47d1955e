package ingest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"testing"

	"github.com/quarry-project/quarry/internal/origintest"
)

// sparseFile is a file of the given size that is zero but for parts.
type sparseFile struct {
	size  int64
	parts map[int64][]byte
}

func (s sparseFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), s.size-off))
	clear(p[:n])
	for at, b := range s.parts {
		lo, hi := max(at, off), min(at+int64(len(b)), off+int64(n))
		if lo < hi {
			copy(p[lo-off:hi-off], b[lo-at:hi-at])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func qcow2Header(version uint32, virtual uint64) []byte {
	h := make([]byte, 104)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[4:], version)
	binary.BigEndian.PutUint64(h[24:], virtual)
	return h
}

func vmdkSparse(sectors uint64) []byte {
	h := make([]byte, 512)
	copy(h, "KDMV")
	binary.LittleEndian.PutUint32(h[4:], 1)
	binary.LittleEndian.PutUint64(h[12:], sectors)
	return h
}

const vmdkDescriptor = `# Disk DescriptorFile
version=1
CID=fffffffe
createType="twoGbMaxExtentSparse"

# Extent description
RW 4192256 SPARSE "disk-s001.vmdk"
RW 2048 SPARSE "disk-s002.vmdk"

ddb.virtualHWVersion = "4"
`

// vhdxParts lays out a VHDX's file identifier, region table and metadata
// table (at metaAt, with the Virtual Disk Size item itemAt bytes into it).
func vhdxParts(virtual uint64, metaAt int64, itemAt uint32) (head, regions, meta []byte) {
	le := binary.LittleEndian
	head = []byte("vhdxfile")
	regions = make([]byte, 16+2*32)
	copy(regions, "regi")
	le.PutUint32(regions[8:], 2)
	copy(regions[16:], bytes.Repeat([]byte{0x66}, 16)) // the BAT region, not wanted
	copy(regions[48:], vhdxMetadataRegion)
	le.PutUint64(regions[64:], uint64(metaAt))
	le.PutUint32(regions[72:], 1<<20)
	meta = make([]byte, int(itemAt)+8)
	copy(meta, "metadata")
	le.PutUint16(meta[10:], 2)
	copy(meta[32:], bytes.Repeat([]byte{0x77}, 16)) // file parameters, not wanted
	copy(meta[64:], vhdxVirtualSize)
	le.PutUint32(meta[80:], itemAt)
	le.PutUint32(meta[84:], 8)
	le.PutUint64(meta[itemAt:], virtual)
	return head, regions, meta
}

// vhdxMetaAt is where fuzz inputs place their third part: the metadata
// region of the seeds.
const vhdxMetaAt = 256 << 10

// fuzzFile builds a sparse file from the fuzz arguments: head at 0,
// regions at the VHDX region table, meta at vhdxMetaAt.
func fuzzFile(head, regions, meta []byte) sparseFile {
	s := sparseFile{size: int64(len(head)), parts: map[int64][]byte{0: head}}
	if len(regions) > 0 {
		s.parts[vhdxRegionTable] = regions
		s.size = max(s.size, vhdxRegionTable+int64(len(regions)))
	}
	if len(meta) > 0 {
		s.parts[vhdxMetaAt] = meta
		s.size = max(s.size, vhdxMetaAt+int64(len(meta)))
	}
	return s
}

func TestSniff(t *testing.T) {
	isoHead := origintest.ISO(1<<20, "UBUNTU", 1).Prefix
	vh, vr, vm := vhdxParts(40<<30, 1<<20, 64<<10)
	for _, tt := range []struct {
		name    string
		file    sparseFile
		format  string
		virtual int64
	}{
		{"qcow2 v3", fuzzFile(qcow2Header(3, 10<<30), nil, nil), FormatQCOW2, 10 << 30},
		{"qcow2 v2", fuzzFile(qcow2Header(2, 1<<30), nil, nil), FormatQCOW2, 1 << 30},
		{"qcow2 unknown version", fuzzFile(qcow2Header(9, 1<<30), nil, nil), FormatQCOW2, 0},
		{"qcow2 absurd size", fuzzFile(qcow2Header(3, math.MaxUint64), nil, nil), FormatQCOW2, 0},
		{"qcow2 cut short", fuzzFile([]byte("QFI\xfb\x00\x00"), nil, nil), FormatQCOW2, 0},
		{"vmdk sparse", fuzzFile(vmdkSparse(41943040), nil, nil), FormatVMDK, 20 << 30},
		{"vmdk absurd capacity", fuzzFile(vmdkSparse(math.MaxUint64), nil, nil), FormatVMDK, 0},
		{"vmdk descriptor", fuzzFile([]byte(vmdkDescriptor), nil, nil), FormatVMDK, (4192256 + 2048) * 512},
		{"vhdx", sparseFile{size: 4 << 20, parts: map[int64][]byte{0: vh, vhdxRegionTable: vr, 1 << 20: vm}}, FormatVHDX, 40 << 30},
		{"vhdx without region table", fuzzFile(vh, nil, nil), FormatVHDX, 0},
		{"vhdx metadata past the end", sparseFile{size: 300 << 10, parts: map[int64][]byte{0: vh, vhdxRegionTable: vr}}, FormatVHDX, 0},
		{"iso", sparseFile{size: 1 << 20, parts: map[int64][]byte{0: isoHead}}, FormatISO, 1 << 20},
		{"raw", fuzzFile(bytes.Repeat([]byte{0xeb, 0x63, 0x90}, 50000), nil, nil), FormatRaw, 150000},
		{"empty", fuzzFile(nil, nil, nil), FormatRaw, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			format, virtual, err := Sniff(tt.file, tt.file.size)
			if err != nil || format != tt.format || virtual != tt.virtual {
				t.Fatalf("Sniff = %s, %d, %v; want %s, %d", format, virtual, err, tt.format, tt.virtual)
			}
		})
	}

	boom := errors.New("disk on fire")
	if _, _, err := Sniff(failingReader{boom}, 1<<20); !errors.Is(err, boom) {
		t.Fatalf("read error: %v", err)
	}
}

type failingReader struct{ err error }

func (r failingReader) ReadAt(p []byte, off int64) (int, error) { return 0, r.err }

// FuzzSniff feeds disk headers from untrusted downloads to Sniff: it must
// never panic, fail or report a negative size, and must report the file
// size for formats without a header size.
func FuzzSniff(f *testing.F) {
	f.Add(qcow2Header(3, 10<<30), []byte(nil), []byte(nil))
	f.Add(vmdkSparse(2048), []byte(nil), []byte(nil))
	f.Add([]byte(vmdkDescriptor), []byte(nil), []byte(nil))
	vh, vr, vm := vhdxParts(1<<30, vhdxMetaAt, 96)
	f.Add(vh, vr, vm)
	f.Add(origintest.ISO(64<<10, "FUZZ", 1).Prefix, []byte(nil), []byte(nil))
	f.Add([]byte("raw bytes"), []byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, head, regions, meta []byte) {
		file := fuzzFile(head, regions, meta)
		format, virtual, err := Sniff(file, file.size)
		if err != nil {
			t.Fatalf("Sniff failed on a readable file: %v", err)
		}
		if virtual < 0 {
			t.Fatalf("negative virtual size %d", virtual)
		}
		switch format {
		case FormatQCOW2, FormatVMDK, FormatVHDX:
		case FormatISO, FormatRaw:
			if virtual != file.size {
				t.Fatalf("%s: virtual size %d, file size %d", format, virtual, file.size)
			}
		default:
			t.Fatalf("unknown format %q", format)
		}
	})
}
