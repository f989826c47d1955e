package ingest

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// sink hashes and writes a download's bytes into the partial file behind
// the network. The download goroutine reads the body straight into a
// chunk and submits it when it is full; the sink's hasher hashes the
// chunks in order, and its writer writes them in order, while the next
// ones fill: reading, hashing and writing each have a goroutine, so that
// a download can use more than one core. A checkpoint submitted with a
// chunk gets the hash state once that chunk is hashed, and is made
// durable right after that chunk is written, so its hash state covers
// exactly the bytes on disk. The hashes are the hasher's from a submit
// until the next drain.
//
// Where the filesystem allows it, full chunks are written with O_DIRECT:
// the data goes to the disk as it arrives, without a copy into the page
// cache (which the node's VMs need more) and without gigabytes of dirty
// pages for a checkpoint or the final fsync to push out at once. File
// offsets then stay multiples of dioAlign up to the last, shorter chunk,
// which is written through the page cache, like everything on filesystems
// without O_DIRECT.
type sink struct {
	f       *os.File
	persist func(*checkpoint) error // run by the sink's goroutine

	// Owned by the download goroutine.
	cur  []byte // the chunk being filled: cur[:n]
	n    int
	base int64 // file offset of cur[0]; every byte before it was submitted

	// direct says O_DIRECT is on. The download goroutine changes it while
	// no chunk is in flight, the sink's goroutine while it writes one.
	direct bool

	mem      []byte // all the chunks, from chunkMemory
	free     chan []byte
	hashq    chan chunk // to the hasher
	work     chan chunk // to the writer
	inFlight sync.WaitGroup
	done     chan struct{}

	mu  sync.Mutex
	err error // the first failure; later chunks are dropped
}

type chunk struct {
	b   []byte
	off int64
	h   *hashes     // to hash b with
	ck  *checkpoint // gets h's state once b is hashed, made durable once b is written; nil: none due
}

const (
	chunkSize = 1 << 20
	// chunks bounds memory: 8 MiB per download, whatever the file size,
	// enough to keep reading through a slow write or checkpoint. It is
	// mapped for the download and unmapped after, so an agent's memory
	// does not keep the high-water mark of its busiest hour.
	chunks = 8
	// dioAlign is the alignment O_DIRECT asks of memory, offsets and
	// lengths: 4096 satisfies every logical block size in use.
	dioAlign = 4096
)

func newSink(f *os.File, persist func(*checkpoint) error) (*sink, error) {
	mem, err := chunkMemory(chunks * chunkSize)
	if err != nil {
		return nil, err
	}
	s := &sink{
		f:       f,
		persist: persist,
		mem:     mem,
		free:    make(chan []byte, chunks),
		hashq:   make(chan chunk, chunks),
		work:    make(chan chunk, chunks),
		done:    make(chan struct{}),
	}
	for i := range chunks {
		b := mem[i*chunkSize : (i+1)*chunkSize : (i+1)*chunkSize]
		if i == 0 {
			s.cur = b
		} else {
			s.free <- b
		}
	}
	go s.hash()
	go s.run()
	return s, nil
}

// reset starts filling at off with nothing pending, after a drain. Full
// chunks go through O_DIRECT from here if off is aligned and the file
// allows it.
func (s *sink) reset(off int64) {
	s.base, s.n = off, 0
	s.setDirect(off%dioAlign == 0)
}

// space is where the next bytes of the body go.
func (s *sink) space() []byte { return s.cur[s.n:] }

// add accounts for n bytes read into space and reports whether the chunk
// is full.
func (s *sink) add(n int) (full bool) {
	s.n += n
	return s.n == len(s.cur)
}

// end is the file offset after the pending bytes.
func (s *sink) end() int64 { return s.base + int64(s.n) }

// pending is the chunk filled so far. Bytes written with finish are
// hashed by the caller, after a drain.
func (s *sink) pending() []byte { return s.cur[:s.n] }

// submit hands the full pending chunk to the sink's goroutines, to be
// hashed with h, then written, then ck (or nil) made durable, and gives a
// fresh chunk to fill. It fails with the first write or checkpoint
// failure, once that has happened.
func (s *sink) submit(h *hashes, ck *checkpoint) error {
	if err := s.failed(); err != nil {
		return err
	}
	s.inFlight.Add(1)
	s.hashq <- chunk{b: s.cur[:s.n], off: s.base, h: h, ck: ck}
	s.base += int64(s.n)
	s.cur, s.n = <-s.free, 0
	return nil
}

// drain waits until every submitted chunk is written, and reports the
// first failure.
func (s *sink) drain() error {
	s.inFlight.Wait()
	return s.failed()
}

// finish writes the last, shorter chunk after all the others, through the
// page cache, and leaves O_DIRECT off so that the file can be read
// normally.
func (s *sink) finish() error {
	if err := s.drain(); err != nil {
		return err
	}
	s.setDirect(false)
	if s.n == 0 {
		return nil
	}
	if _, err := s.f.WriteAt(s.pending(), s.base); err != nil {
		return &writeFailure{err: err, at: s.base}
	}
	s.base, s.n = s.base+int64(s.n), 0
	return nil
}

// close stops the sink's goroutines after the chunks in flight and frees
// the chunks: nothing may use the sink after.
func (s *sink) close() {
	close(s.hashq)
	<-s.done
	s.cur = nil
	freeChunkMemory(s.mem)
}

// hash hashes the chunks in order and passes them to the writer, with
// their checkpoint's hash state. After a failure, as the writer drops
// them, it does not hash them.
func (s *sink) hash() {
	defer close(s.work)
	for c := range s.hashq {
		if s.failed() != nil {
			s.work <- c
			continue
		}
		c.h.Write(c.b)
		if c.ck != nil {
			var err error
			if c.ck.SHA256, c.ck.SHA512, err = c.h.state(); err != nil {
				s.mu.Lock()
				s.err = fmt.Errorf("saving the hash state of job %s: %w", c.ck.Job, err)
				s.mu.Unlock()
			}
		}
		s.work <- c
	}
}

func (s *sink) run() {
	defer close(s.done)
	for c := range s.work {
		if s.failed() == nil {
			err := s.write(c.b, c.off)
			if err != nil {
				err = &writeFailure{err: err, at: c.off}
			} else if c.ck != nil {
				err = s.persist(c.ck)
			}
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
		}
		s.free <- c.b[:cap(c.b)]
		s.inFlight.Done()
	}
}

func (s *sink) write(b []byte, off int64) error {
	_, err := s.f.WriteAt(b, off)
	if err != nil && s.direct && errors.Is(err, syscall.EINVAL) {
		// The filesystem accepted the flag but not this write: go on
		// through the page cache.
		if s.setDirect(false); !s.direct {
			_, err = s.f.WriteAt(b, off)
		}
	}
	return err
}

// setDirect turns O_DIRECT on or off; it stays off where the file does
// not support it.
func (s *sink) setDirect(on bool) {
	if on != s.direct && setDirect(s.f, on) == nil {
		s.direct = on
	}
}

// writeFailure is a chunk the sink could not write at offset at.
type writeFailure struct {
	err error
	at  int64
}

func (e *writeFailure) Error() string { return e.err.Error() }
func (e *writeFailure) Unwrap() error { return e.err }

func (s *sink) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
