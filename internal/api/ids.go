package api

import (
	"crypto/rand"
	"encoding/hex"
)

// newID returns a random id such as "node-3f2a9c1b7d4e": short enough to
// type, random enough never to collide in one cluster.
func newID(kind string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return kind + "-" + hex.EncodeToString(b)
}
