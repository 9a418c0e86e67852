// Package testutil holds what meshcdn's tests and benchmarks share.
package testutil

import (
	"io"
	"math/rand/v2"
)

// Reader returns size bytes from a ChaCha8 generator seeded with seed: the
// same bytes on every machine and Go version, so that tests can compare CIDs
// with those another implementation (Kubo) computed for the same content.
func Reader(seed uint64, size int64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return io.LimitReader(rand.NewChaCha8(s), size)
}

// Bytes is Reader read into memory.
func Bytes(seed uint64, size int64) []byte {
	b, err := io.ReadAll(Reader(seed, size))
	if err != nil {
		panic(err) // a ChaCha8 reader never fails
	}
	return b
}
