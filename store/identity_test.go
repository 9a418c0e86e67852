package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

// TestImportMatchesKubo imports the Kubo vectors (see testutil.KuboVectors
// for how Kubo produced them) into a store and compares the root CIDs. The
// 1 GiB + 1 MiB vector is checked by the manifest package, which hashes
// without storing.
func TestImportMatchesKubo(t *testing.T) {
	s := newMem(t, -1)
	for _, v := range testutil.KuboVectors {
		if v.Size > 64<<20 {
			continue
		}
		t.Run(fmt.Sprint(v.Size), func(t *testing.T) {
			c, err := s.Import(context.Background(), testutil.Reader(testutil.KuboSeed, v.Size), store.ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if c.Root.String() != v.Cid || c.Size != v.Size {
				t.Errorf("Import(%d bytes) = %s, %d bytes; Kubo gives %s", v.Size, c.Root, c.Size, v.Cid)
			}
		})
	}
}
