package store_test

import (
	"context"
	"testing"

	blocks "github.com/ipfs/go-block-format"

	"github.com/meshcdn/meshcdn/store"
)

// TestNilArguments: a nil reader or block is an error, never a panic, and
// leaves the store as it was.
func TestNilArguments(t *testing.T) {
	ctx := context.Background()
	s := newMem(t, 0)
	if _, err := s.Import(ctx, nil, store.ImportOptions{}); err == nil {
		t.Error("Import(nil reader) succeeded")
	}
	if err := s.Put(ctx, nil); err == nil {
		t.Error("Put(nil) succeeded")
	}
	if err := s.PutMany(ctx, []blocks.Block{nil}); err == nil {
		t.Error("PutMany([nil]) succeeded")
	}
	txn := s.Begin()
	defer txn.Discard()
	if err := txn.Put(ctx, nil); err == nil {
		t.Error("Txn.Put(nil) succeeded")
	}
	if u := s.Usage(); u.Used != 0 || u.Blocks != 0 || u.Roots != 0 {
		t.Errorf("Usage = %+v after nil arguments, want empty", u)
	}
}
