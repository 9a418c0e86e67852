package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

// fileBlocks imports size bytes of seed into a store of its own and
// returns the file's root, its leaves and its inner nodes.
func fileBlocks(t *testing.T, seed uint64, size int64) (cid.Cid, []blocks.Block, []blocks.Block) {
	t.Helper()
	ctx := context.Background()
	src := newMem(t, -1)
	c, err := src.Import(ctx, bytes.NewReader(testutil.Bytes(seed, size)), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := store.Leaves(ctx, src, c.Root, c.Size)
	if err != nil {
		t.Fatal(err)
	}
	var leaves []blocks.Block
	for _, l := range ls {
		b, err := src.Get(ctx, l.Cid)
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, b)
	}
	root, err := src.Get(ctx, c.Root)
	if err != nil {
		t.Fatal(err)
	}
	return c.Root, leaves, []blocks.Block{root}
}

// TestTxnExpectKeepsBlocksPutByOthers: a pin fetches its leaves as loose
// blocks (put one by one, as bitswap does), and other fetches beside it
// evict loose blocks oldest first to make room. A Txn that expects the
// leaves holds each as it lands, so that Commit finds the content whole;
// without Expect the leaves are evicted and Commit fails with
// ErrIncomplete. Discard leaves the expected blocks in the store.
func TestTxnExpectKeepsBlocksPutByOthers(t *testing.T) {
	ctx := context.Background()
	for _, expect := range []bool{true, false} {
		s := newMem(t, 4*mib)
		root, leaves, nodes := fileBlocks(t, 1, 2*mib)
		_, other, _ := fileBlocks(t, 2, 3*mib)
		txn := s.Begin()
		if expect {
			// One leaf expected before it is put, one after.
			if err := txn.Expect(leaves[0].Cid()); err != nil {
				t.Fatal(err)
			}
		}
		for i, b := range leaves {
			if err := s.Put(ctx, b); err != nil {
				t.Fatal(err)
			}
			if expect && i == 0 {
				if err := txn.Expect(leaves[1].Cid()); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, b := range other { // 3 MiB beside 2 in a 4 MiB store
			if err := s.Put(ctx, b); err != nil && !errors.Is(err, store.ErrQuotaExceeded) {
				t.Fatal(err)
			}
		}
		for _, b := range nodes {
			if err := txn.Put(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		err := txn.Commit(ctx, root, true)
		txn.Discard()
		switch {
		case expect && err != nil:
			t.Errorf("with Expect: Commit = %v, want the content whole", err)
		case !expect && !errors.Is(err, store.ErrIncomplete):
			t.Errorf("without Expect: Commit = %v, want ErrIncomplete (the leaves evicted)", err)
		}
		if u := s.Usage(); u.Used > u.Quota {
			t.Errorf("used %d over the quota %d", u.Used, u.Quota)
		}
	}
}

// TestTxnExpectDiscardLeavesBlocks: blocks a discarded Txn expected stay
// in the store, loose and evictable, and the Txn no longer holds blocks
// put after it ended.
func TestTxnExpectDiscardLeavesBlocks(t *testing.T) {
	ctx := context.Background()
	s := newMem(t, 2*mib)
	_, leaves, _ := fileBlocks(t, 3, 2*mib)
	txn := s.Begin()
	if err := txn.Expect(leaves[0].Cid(), leaves[1].Cid()); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, leaves[0]); err != nil {
		t.Fatal(err)
	}
	txn.Discard()
	if err := txn.Expect(leaves[1].Cid()); err == nil {
		t.Error("Expect after Discard succeeded")
	}
	if ok, _ := s.Has(ctx, leaves[0].Cid()); !ok {
		t.Fatal("an expected block put by another was deleted by Discard")
	}
	// Both evictable: 2 MiB of other blocks fit in the 2 MiB store.
	_, other, _ := fileBlocks(t, 4, 2*mib)
	for _, b := range other {
		if err := s.Put(ctx, b); err != nil {
			t.Fatalf("put after Discard: %v (an expected block still held?)", err)
		}
	}
}
