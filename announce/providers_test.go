package announce

import (
	"context"
	"fmt"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

func provKey(key, p int) ds.Key { return ds.NewKey(fmt.Sprintf("/providers/K%d/P%d", key, p)) }

// TestProviderStoreCaps: records past a provider's cap are dropped, a full
// store evicts a record of the provider holding the most, refreshes and
// deletes keep the count, and the batch goes through the caps.
func TestProviderStoreCaps(t *testing.T) {
	ctx := context.Background()
	s := newProviderStore(100, 60)
	for k := range 80 {
		if err := s.Put(ctx, provKey(k, 1), []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	if s.Len() != 60 {
		t.Fatalf("Len = %d after 80 of one provider, want its cap 60", s.Len())
	}
	if has, _ := s.Has(ctx, provKey(79, 1)); has {
		t.Fatal("a record past the provider's cap was kept")
	}
	b, _ := s.Batch(ctx)
	for k := range 50 {
		b.Put(ctx, provKey(k, 2), []byte{2})
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 100 {
		t.Fatalf("Len = %d, want the cap 100", s.Len())
	}
	if n := len(s.byPeer[providerOf(provKey(0, 2))]); n != 50 {
		t.Fatalf("provider 2 holds %d, want all 50 (the heaviest gives way)", n)
	}
	if err := s.Put(ctx, provKey(0, 2), []byte{3}); err != nil || s.Len() != 100 {
		t.Fatalf("refresh: %v, Len %d", err, s.Len())
	}
	if err := s.Delete(ctx, provKey(0, 2)); err != nil || s.Len() != 99 {
		t.Fatalf("delete: %v, Len %d", err, s.Len())
	}
}
