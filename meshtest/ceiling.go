package meshtest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"math"
	"time"
)

// CeilingCPU measures, on data, the CPU seconds per GiB that a verified,
// encrypted transfer cannot avoid on this machine: hashing once (sha2-256,
// per 1 MiB leaf) and sealing and opening once (AES-128-GCM in 16 KiB
// records, what TLS 1.3 does at both ends). Each is the fastest of three
// runs. Adding the CPU per GiB of a plain http.Get and dividing NumCPU by
// the sum gives the ceiling fetch's BenchmarkThroughput and the bench
// program compare a peer fetch with.
func CeilingCPU(data []byte) (sha256PerGiB, aesGCMPerGiB float64) {
	size := int64(len(data))
	sha256PerGiB = perGiB(size, func() {
		for off := int64(0); off < size; off += 1 << 20 {
			sha256.Sum256(data[off:min(off+1<<20, size)])
		}
	})
	aesGCMPerGiB = perGiB(size, func() { sealOpen(data) })
	return sha256PerGiB, aesGCMPerGiB
}

func perGiB(size int64, fn func()) float64 {
	best := time.Duration(math.MaxInt64)
	for range 3 {
		c0 := CPUTime()
		fn()
		best = min(best, CPUTime()-c0)
	}
	return best.Seconds() / (float64(max(size, 1)) / (1 << 30))
}

func sealOpen(data []byte) {
	blk, _ := aes.NewCipher(make([]byte, 16)) // a 16-byte key never fails
	aead, _ := cipher.NewGCM(blk)
	const record = 16 << 10
	nonce := make([]byte, aead.NonceSize())
	buf := make([]byte, 0, record+aead.Overhead())
	out := make([]byte, 0, record)
	for off := 0; off < len(data); off += record {
		sealed := aead.Seal(buf[:0], nonce, data[off:min(off+record, len(data))], nil)
		aead.Open(out[:0], nonce, sealed, nil)
	}
}
