package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

const benchSize = 64 << 20

// BenchmarkImport imports 64 MiB and, in the same iteration, hashes the same
// bytes with plain sha2-256: hashing is the physical limit of an import, so
// the figure is the ratio import/sha256 (1.0 would be import at hash speed).
//
//	go test -run '^$' -bench 'Import|Get' -benchtime 10x ./store
func BenchmarkImport(b *testing.B) {
	data := testutil.Bytes(1, benchSize)
	for _, kind := range []string{"mem", "badger"} {
		b.Run(kind, func(b *testing.B) {
			var hashDur, importDur time.Duration
			b.SetBytes(benchSize)
			for i := 0; b.Loop(); i++ {
				var s *store.Store
				var err error
				b.StopTimer()
				if kind == "mem" {
					s, err = store.New(store.Config{InMemory: true, Quota: -1})
				} else {
					s, err = store.New(store.Config{Dir: b.TempDir(), Quota: -1})
				}
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				sha256.Sum256(data)
				hashDur += time.Since(t0)
				b.StartTimer()

				t0 = time.Now()
				if _, err := s.Import(context.Background(), bytes.NewReader(data), store.ImportOptions{}); err != nil {
					b.Fatal(err)
				}
				importDur += time.Since(t0)
				b.StopTimer()
				s.Close()
				b.StartTimer()
			}
			mibs := func(d time.Duration) float64 { return float64(b.N) * benchSize / (1 << 20) / d.Seconds() }
			b.ReportMetric(mibs(hashDur), "sha256-MiB/s")
			b.ReportMetric(mibs(importDur), "import-MiB/s")
			b.ReportMetric(hashDur.Seconds()/importDur.Seconds(), "import/sha256")
		})
	}
}

// BenchmarkGet reads back 64 MiB of leaves from a reopened badger store
// (each block's hash checked on read) beside plain sha2-256 over the same
// bytes, and reports the ratio get/sha256.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	s, err := store.New(store.Config{Dir: dir, Quota: -1})
	if err != nil {
		b.Fatal(err)
	}
	data := testutil.Bytes(2, benchSize)
	c, err := s.Import(ctx, bytes.NewReader(data), store.ImportOptions{})
	if err != nil {
		b.Fatal(err)
	}
	leaves, err := store.Leaves(ctx, s, c.Root, c.Size)
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	s, err = store.New(store.Config{Dir: dir, Quota: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	cids := make([]cid.Cid, len(leaves))
	for i, l := range leaves {
		cids[i] = l.Cid
	}
	var hashDur, getDur time.Duration
	b.SetBytes(benchSize)
	for b.Loop() {
		t0 := time.Now()
		for _, k := range cids {
			if _, err := s.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
		getDur += time.Since(t0)
		b.StopTimer()
		t0 = time.Now()
		sha256.Sum256(data)
		hashDur += time.Since(t0)
		b.StartTimer()
	}
	mibs := func(d time.Duration) float64 { return float64(b.N) * benchSize / (1 << 20) / d.Seconds() }
	b.ReportMetric(mibs(hashDur), "sha256-MiB/s")
	b.ReportMetric(mibs(getDur), "get-MiB/s")
	b.ReportMetric(hashDur.Seconds()/getDur.Seconds(), "get/sha256")
}
