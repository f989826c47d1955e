package ingest

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
)

// Digest is an expected checksum. The zero Digest expects nothing.
type Digest struct {
	Algo string // "sha256" or "sha512"
	Hex  string // lower-case hex
}

// ParseDigest parses "sha256:<64 hex digits>" or "sha512:<128 hex
// digits>". A bare hex string is taken by its length, as SHA256SUMS files
// and download pages print it. Upper-case hex is accepted and lowered.
func ParseDigest(s string) (Digest, error) {
	const want = "give the checksum as sha256:<64 hex digits> or sha512:<128 hex digits>"
	s = strings.TrimSpace(s)
	algo, hx, found := strings.Cut(s, ":")
	if !found {
		algo, hx = "", s
	}
	algo = strings.ToLower(algo)
	switch {
	case algo == "" && len(hx) == 64:
		algo = "sha256"
	case algo == "" && len(hx) == 128:
		algo = "sha512"
	case algo == "":
		return Digest{}, fmt.Errorf("checksum %q has no algorithm and is not 64 or 128 hex digits long; %s", shorten(s), want)
	case algo != "sha256" && algo != "sha512":
		return Digest{}, fmt.Errorf("checksum algorithm %q is not supported; %s", shorten(algo), want)
	}
	n := map[string]int{"sha256": 64, "sha512": 128}[algo]
	if len(hx) != n {
		return Digest{}, fmt.Errorf("%s checksum has %d hex digits, not %d; %s", algo, len(hx), n, want)
	}
	if _, err := hex.DecodeString(hx); err != nil {
		return Digest{}, fmt.Errorf("%s checksum %q is not hexadecimal; %s", algo, shorten(hx), want)
	}
	return Digest{Algo: algo, Hex: strings.ToLower(hx)}, nil
}

// IsZero reports whether d expects nothing.
func (d Digest) IsZero() bool { return d.Algo == "" }

func (d Digest) String() string {
	if d.IsZero() {
		return ""
	}
	return d.Algo + ":" + d.Hex
}

func shorten(s string) string {
	if len(s) > 140 {
		return s[:140] + "…"
	}
	return s
}

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
