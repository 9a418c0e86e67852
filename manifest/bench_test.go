package manifest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
)

// BenchmarkParse reads a valid manifest of 10,000 small assets and one of
// 3 MiB (an inner node): what a site follower pays at each new version.
func BenchmarkParse(b *testing.B) {
	ctx := context.Background()
	big, err := manifest.FromReader(ctx, testutil.Reader(1, 3<<20))
	if err != nil {
		b.Fatal(err)
	}
	big.Path, big.Type = "big.bin", "application/octet-stream"
	m := &manifest.Manifest{Assets: []manifest.Asset{big}}
	for i := range 10_000 {
		a, err := manifest.FromReader(ctx, testutil.Reader(uint64(i+2), 100))
		if err != nil {
			b.Fatal(err)
		}
		a.Path, a.Type = fmt.Sprintf("img/%05d.png", i), "image/png"
		m.Assets = append(m.Assets, a)
	}
	data, err := m.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := manifest.Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
