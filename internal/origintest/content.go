package origintest

import (
	"encoding/binary"
	"hash"
	"io"
	"math/rand/v2"

	"github.com/quarry-project/quarry/internal/isofs/isotest"
)

// blockSize is the unit of generation: each block has its own ChaCha8 key,
// so any offset costs at most one block of work and nothing is kept.
const blockSize = 64 << 10

// Content is a file an Origin serves: Size bytes of pseudo-random data
// chosen by Seed, with Prefix laid over its start. It is a value and holds
// no data beyond Prefix, so a multi-gigabyte image costs nothing until it
// is read.
type Content struct {
	Size int64
	Seed uint64
	// Prefix replaces the first len(Prefix) bytes (clipped to Size): a disk
	// header, an ISO volume descriptor, or the whole file for literal
	// content.
	Prefix []byte
}

// Random is Size bytes of pseudo-random data: a raw image.
func Random(size int64, seed uint64) Content { return Content{Size: size, Seed: seed} }

// Bytes is content given literally.
func Bytes(b []byte) Content { return Content{Size: int64(len(b)), Prefix: b} }

// QCOW2 is an image that starts with a valid qcow2 version 3 header
// announcing virtualSize bytes; the rest is random. Only the header is
// meaningful: enough for format detection, not for qemu-img.
func QCOW2(size, virtualSize int64, seed uint64) Content {
	h := make([]byte, 112)
	copy(h, "QFI\xfb")
	be := binary.BigEndian
	be.PutUint32(h[4:], 3)                    // version
	be.PutUint32(h[20:], 16)                  // cluster_bits: 64 KiB clusters
	be.PutUint64(h[24:], uint64(virtualSize)) // size
	be.PutUint32(h[36:], 1)                   // l1_size
	be.PutUint64(h[40:], 3*blockSize)         // l1_table_offset
	be.PutUint64(h[48:], blockSize)           // refcount_table_offset
	be.PutUint32(h[56:], 1)                   // refcount_table_clusters
	be.PutUint32(h[96:], 4)                   // refcount_order: 16-bit refcounts
	be.PutUint32(h[100:], uint32(len(h)))     // header_length
	return Content{Size: size, Seed: seed, Prefix: h}
}

// ISO is an image whose first sectors are a valid ISO 9660 header with the
// given volume label; the rest is random.
func ISO(size int64, label string, seed uint64) Content {
	return Content{Size: size, Seed: seed, Prefix: isotest.Image{Label: label, Size: size}.Header()}
}

// ReadAt fills p with the content at off, like io.ReaderAt.
func (c Content) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if off >= c.Size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := c.Size - off; int64(n) > rest {
		n = int(rest)
	}
	c.fill(p[:n], off, nil)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fill writes the content at off into p, which must lie inside the
// content. scratch, if it holds a block, saves an allocation.
func (c Content) fill(p []byte, off int64, scratch []byte) {
	for done := 0; done < len(p); {
		pos := off + int64(done)
		block, in := pos/blockSize, int(pos%blockSize)
		want := min(len(p)-done, blockSize-in)
		if in == 0 && want == blockSize {
			c.block(block, p[done:done+blockSize])
		} else {
			if len(scratch) < blockSize {
				scratch = make([]byte, blockSize)
			}
			c.block(block, scratch[:blockSize])
			copy(p[done:done+want], scratch[in:])
		}
		done += want
	}
	if off < int64(len(c.Prefix)) {
		copy(p, c.Prefix[off:])
	}
}

// block generates block number i into b (blockSize bytes).
func (c Content) block(i int64, b []byte) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], c.Seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(i))
	copy(key[16:], "quarry-origin")
	rand.NewChaCha8(key).Read(b)
}

// sum hashes the whole content with h, a block at a time.
func (c Content) sum(h hash.Hash) []byte {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < c.Size; {
		n := int(min(int64(len(buf)), c.Size-off))
		c.fill(buf[:n], off, nil)
		h.Write(buf[:n])
		off += int64(n)
	}
	return h.Sum(nil)
}
