package ingest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
)

// Disk image formats Sniff tells apart.
const (
	FormatQCOW2 = "qcow2"
	FormatVMDK  = "vmdk"
	FormatVHDX  = "vhdx"
	FormatISO   = "iso"
	FormatRaw   = "raw"
)

// Sniff identifies the disk image of the given size that r reads, by its
// magic bytes, and returns its format and virtual size: the size of the
// disk a VM sees, read from the header for qcow2, vmdk and vhdx (0 when
// the header does not say), the file size for iso and raw. Anything
// unrecognized is raw. The input is untrusted: every offset is checked,
// and at most a few 64 KiB reads are made. An error means r failed.
func Sniff(r io.ReaderAt, size int64) (format string, virtualSize int64, err error) {
	head, err := readAt(r, size, 0, 512)
	if err != nil {
		return "", 0, err
	}
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return FormatQCOW2, qcow2Size(head), nil
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		vs, err := vhdxSize(r, size)
		return FormatVHDX, vs, err
	case bytes.HasPrefix(head, []byte("KDMV")):
		return FormatVMDK, vmdkSparseSize(head), nil
	case bytes.HasPrefix(head, []byte("# Disk DescriptorFile")):
		desc, err := readAt(r, size, 0, 64<<10)
		return FormatVMDK, vmdkDescriptorSize(desc), err
	}
	// ISO 9660: the first volume descriptor is at sector 16 (32768) and
	// carries "CD001" after its type byte.
	if id, err := readAt(r, size, 32769, 5); err != nil {
		return "", 0, err
	} else if string(id) == "CD001" {
		return FormatISO, size, nil
	}
	return FormatRaw, size, nil
}

// readAt reads up to n bytes at off, fewer where the file ends.
func readAt(r io.ReaderAt, size, off int64, n int) ([]byte, error) {
	if off < 0 || off >= size {
		return nil, nil
	}
	n = int(min(int64(n), size-off))
	b := make([]byte, n)
	m, err := r.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:m], nil // shorter than size claimed: judge what is there
}

// qcow2Size reads the virtual size, a big-endian uint64 at 24, from
// versions 2 and 3.
func qcow2Size(h []byte) int64 {
	if len(h) < 32 {
		return 0
	}
	if v := binary.BigEndian.Uint32(h[4:]); v != 2 && v != 3 {
		return 0
	}
	return clampSize(binary.BigEndian.Uint64(h[24:]))
}

// vmdkSparseSize reads the capacity in 512-byte sectors, a little-endian
// uint64 at 12 of a sparse extent header.
func vmdkSparseSize(h []byte) int64 {
	if len(h) < 20 {
		return 0
	}
	sectors := binary.LittleEndian.Uint64(h[12:])
	if sectors > math.MaxInt64/512 {
		return 0
	}
	return int64(sectors) * 512
}

// vmdkDescriptorSize adds up the extent lines of a text descriptor, such
// as `RW 41943040 SPARSE "disk-s001.vmdk"` (sizes in sectors).
func vmdkDescriptorSize(desc []byte) int64 {
	var sectors int64
	sc := bufio.NewScanner(bytes.NewReader(desc))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || (f[0] != "RW" && f[0] != "RDONLY" && f[0] != "NOACCESS") {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/512-sectors {
			return 0
		}
		sectors += n
	}
	return sectors * 512
}

// VHDX layout (MS-VHDX): the region table at 192 KiB points to the
// metadata region, whose table points to the Virtual Disk Size item.
const vhdxRegionTable = 192 << 10

var (
	vhdxMetadataRegion = []byte{0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e}
	vhdxVirtualSize    = []byte{0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8}
)

func vhdxSize(r io.ReaderAt, size int64) (int64, error) {
	le := binary.LittleEndian
	rt, err := readAt(r, size, vhdxRegionTable, 64<<10)
	if err != nil || len(rt) < 16 || string(rt[:4]) != "regi" {
		return 0, err
	}
	var meta int64 = -1
	for i := range min(int(le.Uint32(rt[8:])), 2047) {
		if 16+32*(i+1) > len(rt) {
			break
		}
		e := rt[16+32*i:]
		if bytes.Equal(e[:16], vhdxMetadataRegion) {
			meta = clampSize(le.Uint64(e[16:]))
			break
		}
	}
	if meta <= 0 {
		return 0, nil
	}
	mt, err := readAt(r, size, meta, 64<<10)
	if err != nil || len(mt) < 32 || string(mt[:8]) != "metadata" {
		return 0, err
	}
	for i := range min(int(le.Uint16(mt[10:])), 2047) {
		if 32+32*(i+1) > len(mt) {
			break
		}
		e := mt[32+32*i:]
		if bytes.Equal(e[:16], vhdxVirtualSize) {
			v, err := readAt(r, size, meta+int64(le.Uint32(e[16:])), 8)
			if err != nil || len(v) < 8 {
				return 0, err
			}
			return clampSize(le.Uint64(v)), nil
		}
	}
	return 0, nil
}

// clampSize turns an untrusted unsigned size into an int64, 0 if it does
// not fit.
func clampSize(v uint64) int64 {
	if v > math.MaxInt64 {
		return 0
	}
	return int64(v)
}
