package ingest

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/hex"
	"fmt"
	"hash"
)

// hashes is what a download computes as bytes stream by: SHA-256 always
// (Quarry records it for every image), SHA-512 when that is expected.
type hashes struct {
	sha256 hash.Hash
	sha512 hash.Hash // nil unless wanted
}

func newHashes(withSHA512 bool) *hashes {
	h := &hashes{sha256: sha256.New()}
	if withSHA512 {
		h.sha512 = sha512.New()
	}
	return h
}

func (h *hashes) Write(p []byte) {
	h.sha256.Write(p)
	if h.sha512 != nil {
		h.sha512.Write(p)
	}
}

// state serializes the hashes for a checkpoint.
func (h *hashes) state() (s256, s512 []byte, err error) {
	if s256, err = h.sha256.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
		return nil, nil, err
	}
	if h.sha512 != nil {
		if s512, err = h.sha512.(encoding.BinaryMarshaler).MarshalBinary(); err != nil {
			return nil, nil, err
		}
	}
	return s256, s512, nil
}

// restoreHashes rebuilds hashes from a checkpoint; it fails if the
// checkpoint lacks a state that is wanted now.
func restoreHashes(s256, s512 []byte, withSHA512 bool) (*hashes, error) {
	h := newHashes(withSHA512)
	if err := h.sha256.(encoding.BinaryUnmarshaler).UnmarshalBinary(s256); err != nil {
		return nil, fmt.Errorf("sha256 state: %w", err)
	}
	if withSHA512 {
		if len(s512) == 0 {
			return nil, fmt.Errorf("the checkpoint has no sha512 state")
		}
		if err := h.sha512.(encoding.BinaryUnmarshaler).UnmarshalBinary(s512); err != nil {
			return nil, fmt.Errorf("sha512 state: %w", err)
		}
	}
	return h, nil
}

// sums returns the hex digests of everything written so far.
func (h *hashes) sums() (s256, s512 string) {
	s256 = hex.EncodeToString(h.sha256.Sum(nil))
	if h.sha512 != nil {
		s512 = hex.EncodeToString(h.sha512.Sum(nil))
	}
	return s256, s512
}
