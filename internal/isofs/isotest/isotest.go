// Package isotest writes small but valid ISO 9660 images for tests: a
// system area, a primary volume descriptor, an optional El Torito boot
// record, a terminator and padding up to the requested size.
package isotest

import (
	"encoding/binary"
	"io"
	"os"
)

const sector = 2048

// Image describes an image to build.
type Image struct {
	Label    string
	SystemID string
	Bootable bool
	// Size in bytes; rounded up to whole sectors, at least 20 sectors.
	Size int64
}

// Header returns the first sectors of the image: everything but the
// padding.
func (im Image) Header() []byte {
	n := 19
	if im.Bootable {
		n = 20
	}
	b := make([]byte, n*sector)
	blocks := uint32(max(im.Size, int64(n*sector)) / sector)

	pvd := b[16*sector : 17*sector]
	pvd[0], pvd[6] = 1, 1
	copy(pvd[1:6], "CD001")
	pad(pvd[8:40], im.SystemID)
	pad(pvd[40:72], im.Label)
	binary.LittleEndian.PutUint32(pvd[80:84], blocks)
	binary.BigEndian.PutUint32(pvd[84:88], blocks)
	binary.LittleEndian.PutUint16(pvd[128:130], sector)
	binary.BigEndian.PutUint16(pvd[130:132], sector)
	pad(pvd[318:446], "")
	pad(pvd[574:702], "QUARRY ISOTEST")

	next := 17
	if im.Bootable {
		br := b[next*sector : (next+1)*sector]
		br[0], br[6] = 0, 1
		copy(br[1:6], "CD001")
		copy(br[7:39], "EL TORITO SPECIFICATION")
		next++
	}
	term := b[next*sector : (next+1)*sector]
	term[0], term[6] = 255, 1
	copy(term[1:6], "CD001")
	return b
}

// WriteTo writes the whole image, padded with zeros to Size.
func (im Image) WriteTo(w io.Writer) (int64, error) {
	h := im.Header()
	n, err := w.Write(h)
	total := int64(n)
	if err != nil {
		return total, err
	}
	zeros := make([]byte, 64<<10)
	for total < im.Size {
		chunk := min(int64(len(zeros)), im.Size-total)
		n, err := w.Write(zeros[:chunk])
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// WriteFile writes the image to path.
func (im Image) WriteFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := im.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func pad(field []byte, s string) {
	for i := range field {
		field[i] = ' '
	}
	copy(field, s)
}
