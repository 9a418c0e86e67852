package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

// gatedDS holds every write of a block until release is closed, and says
// on entered (buffered, never blocking) that one is waiting.
type gatedDS struct {
	datastore.Batching
	entered chan struct{}
	release chan struct{}
}

// newGatedDS returns a gatedDS over an empty in-memory datastore.
func newGatedDS() *gatedDS {
	return &gatedDS{
		Batching: dssync.MutexWrap(datastore.NewMapDatastore()),
		entered:  make(chan struct{}, 1),
		release:  make(chan struct{}),
	}
}

func (d *gatedDS) Put(ctx context.Context, k datastore.Key, v []byte) error {
	if k.IsDescendantOf(datastore.NewKey("/blocks")) {
		select {
		case d.entered <- struct{}{}:
		default:
		}
		<-d.release
	}
	return d.Batching.Put(ctx, k, v)
}

// TestTxnDiscardDuringPut: a Txn is discarded while one of its blocks is
// being written. The block must not end up in the database unaccounted
// for (Used must count every block the database holds), and evicting it
// later must not take Used below zero.
func TestTxnDiscardDuringPut(t *testing.T) {
	ctx := context.Background()
	ds := newGatedDS()
	s, err := store.New(store.Config{Datastore: ds, Quota: 2 * mib})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	blk := blocks.NewBlock(testutil.Bytes(1, mib))
	txn := s.Begin()
	done := make(chan error, 1)
	go func() { done <- txn.Put(ctx, blk) }()
	<-ds.entered
	txn.Discard()
	close(ds.release)
	if err := <-done; err != nil {
		t.Logf("Txn.Put racing Discard = %v", err)
	}
	inDS, err := ds.Has(ctx, datastore.NewKey("/blocks").Child(dshelpKey(blk.Cid())))
	if err != nil {
		t.Fatal(err)
	}
	has, err := s.Has(ctx, blk.Cid())
	if err != nil {
		t.Fatal(err)
	}
	u := s.Usage()
	if inDS != has || (has && u.Used != mib) || (!has && u.Used != 0) {
		t.Errorf("after Discard during Put: block in database %v, Has %v, Used %d", inDS, has, u.Used)
	}
	// Make the store evict whatever it holds, twice over.
	for i := range 2 {
		if err := s.Put(ctx, blocks.NewBlock(testutil.Bytes(uint64(2+i), 2*mib))); err != nil {
			t.Fatalf("Put %d = %v", i, err)
		}
	}
	if u := s.Usage(); u.Used != 2*mib {
		t.Errorf("Used = %d after holding one 2 MiB block, want %d", u.Used, 2*mib)
	}
}

// TestTxnPutRacingDiscard: a Txn is safe for concurrent use, so a Put
// racing its Discard returns (an error or nil) and never panics; whatever
// it stored is accounted for.
func TestTxnPutRacingDiscard(t *testing.T) {
	ctx := context.Background()
	s := newMem(t, -1)
	blk := blocks.NewBlock(testutil.Bytes(5, mib)) // hashing it opens the race's window
	for range 50 {
		txn := s.Begin()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); txn.Put(ctx, blk) }()
		go func() { defer wg.Done(); txn.Discard() }()
		wg.Wait()
		if err := s.DeleteBlock(ctx, blk.Cid()); err != nil {
			t.Fatalf("DeleteBlock after Discard = %v", err)
		}
	}
	if u := s.Usage(); u.Used != 0 || u.Blocks != 0 {
		t.Errorf("Usage = %+v after every block was deleted", u)
	}
	txn := s.Begin()
	txn.Discard()
	if err := txn.Put(ctx, blk); err == nil {
		t.Error("Put after Discard succeeded")
	}
}

// TestAddRootWaitsForBlockBeingWritten: content named (AddRoot, as a pin
// does) while another caller is still writing its block waits for that
// write and succeeds. It failed with ErrIncomplete: a node pinning a site
// while its gateway read the same file failed 1 round in 40.
func TestAddRootWaitsForBlockBeingWritten(t *testing.T) {
	ctx := context.Background()
	ds := newGatedDS()
	s, err := store.New(store.Config{Datastore: ds, Quota: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	data := testutil.Bytes(3, mib)
	c, err := cid.NewPrefixV1(cid.Raw, mh.SHA2_256).Sum(data)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := blocks.NewBlockWithCid(data, c)
	if err != nil {
		t.Fatal(err)
	}
	put := make(chan error, 1)
	go func() { put <- s.Put(ctx, blk) }()
	<-ds.entered // the block is being written
	added := make(chan error, 1)
	go func() { added <- s.AddRoot(ctx, blk.Cid(), true) }()
	select {
	case err := <-added:
		t.Fatalf("AddRoot returned while its block was being written: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(ds.release)
	if err := <-put; err != nil {
		t.Fatalf("Put = %v", err)
	}
	if err := <-added; err != nil {
		t.Fatalf("AddRoot = %v, want it to wait for the write", err)
	}
	if !s.Holds(blk.Cid()) {
		t.Error("the content is not held after AddRoot")
	}
}
