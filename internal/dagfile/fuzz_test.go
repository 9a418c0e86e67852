package dagfile_test

import (
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"

	"github.com/meshcdn/meshcdn/internal/dagfile"
)

// FuzzWalk feeds arbitrary bytes as a root node (manifests carry inner nodes
// from the origin, so this is a decoder of outside input): Walk must never
// panic, and what it accepts must describe contiguous leaves.
func FuzzWalk(f *testing.F) {
	f.Add(rootOf(f, 3<<20+5))
	f.Add(rootOf(f, 1<<20+1))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x08, 0x02})
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := dagfile.Prefix.Sum(raw)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := blocks.NewBlockWithCid(raw, c)
		var next int64
		total, err := dagfile.Walk(context.Background(), blockGetter{c.KeyString(): b}, c, 0, nil, func(l dagfile.Leaf) error {
			if l.Offset != next || l.Size < 0 || l.Size > dagfile.ChunkSize {
				t.Fatalf("leaf at %d of %d bytes, want offset %d", l.Offset, l.Size, next)
			}
			next += l.Size
			return nil
		})
		if err == nil && total != next {
			t.Fatalf("Walk = %d bytes, leaves add up to %d", total, next)
		}
	})
}
