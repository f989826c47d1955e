// Package isofs reads the identity of an ISO 9660 image: its primary volume
// descriptor (volume label, system id, size) and whether it carries an El
// Torito boot record. It reads only the volume descriptor set at the start
// of the image, never the directory tree, and trusts nothing in it: every
// field is bounded and cleaned, and garbage yields ErrNotISO, never a panic.
package isofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// SectorSize is the ISO 9660 logical sector size used by every image
// Quarry will meet.
const SectorSize = 2048

const (
	firstDescriptor = 16 // sectors 0–15 are the system area
	maxDescriptors  = 64 // a real set has a handful; bound the loop

	typeBootRecord    = 0
	typePrimary       = 1
	typeSupplementary = 2
	typeTerminator    = 255
)

var standardID = []byte("CD001")

// ErrNotISO means the bytes do not start an ISO 9660 volume.
var ErrNotISO = errors.New("not an ISO 9660 image")

// Info is what the volume descriptors say about an image.
type Info struct {
	// Label is the volume identifier ("Ubuntu-Server 24.04.1 LTS amd64").
	Label string
	// SystemID is the system identifier ("LINUX", "Win32").
	SystemID string
	// PublisherID and ApplicationID, when the image names them in place
	// (identifiers that point at files are left out).
	PublisherID   string
	ApplicationID string
	// VolumeBytes is the size the volume claims (blocks × block size).
	VolumeBytes uint64
	// Bootable: an El Torito boot record is present.
	Bootable bool
}

// Read parses the volume descriptor set of the image in r.
func Read(r io.ReaderAt) (Info, error) {
	var info Info
	var sawPrimary bool
	buf := make([]byte, SectorSize)
descriptors:
	for i := range maxDescriptors {
		off := int64(firstDescriptor+i) * SectorSize
		if _, err := r.ReadAt(buf, off); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break descriptors
			}
			return Info{}, fmt.Errorf("reading volume descriptor %d: %w", i, err)
		}
		if !bytes.Equal(buf[1:6], standardID) {
			if i == 0 {
				return Info{}, ErrNotISO
			}
			break descriptors // the set ended without a terminator; keep what we have
		}
		switch buf[0] {
		case typePrimary:
			if !sawPrimary {
				info.Label = text(buf[40:72])
				info.SystemID = text(buf[8:40])
				info.PublisherID = identifier(buf[318:446])
				info.ApplicationID = identifier(buf[574:702])
				blocks := binary.LittleEndian.Uint32(buf[80:84])
				blockSize := binary.LittleEndian.Uint16(buf[128:130])
				info.VolumeBytes = uint64(blocks) * uint64(blockSize)
				sawPrimary = true
			}
		case typeBootRecord:
			if strings.HasPrefix(text(buf[7:39]), "EL TORITO SPECIFICATION") {
				info.Bootable = true
			}
		case typeTerminator:
			break descriptors
		case typeSupplementary:
			// Joliet repeats the label in UCS-2, shorter; the primary one wins.
		}
	}
	if !sawPrimary {
		return Info{}, fmt.Errorf("%w: no primary volume descriptor", ErrNotISO)
	}
	return info, nil
}

// text turns a fixed-width, space- or NUL-padded field into clean text:
// printable runes only, trimmed.
func text(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, string(b))
	return strings.TrimSpace(s)
}

// identifier is text, except that a field starting with '_' names a file
// holding the value, which Quarry does not follow.
func identifier(b []byte) string {
	s := text(b)
	if strings.HasPrefix(s, "_") {
		return ""
	}
	return s
}
