package announce

import (
	"context"
	"strings"
	"sync"

	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
)

// Provider record bounds. go-libp2p-kad-dht v0.42 keeps every ADD_PROVIDER
// it accepts for 48 h in an in-memory datastore, with no cap: one
// connection sending records took a seed's live heap from 155 MiB to
// 1.28 GiB at 5 million records. Its ProviderStore cannot be replaced in
// v0.42, but its datastore can (dht.ProviderDatastore): DHTOptions gives
// each DHT a providerStore, which keeps at most MaxProviderRecords records
// (about 250 bytes each: 25 MiB) and MaxProviderRecordsPerPeer of any one
// provider. A new record of a peer at its cap is dropped; when the store is
// full, a record of the peer holding the most goes first, so a flood from
// some keys costs them their own records, not everyone's.
const (
	// MaxProviderRecords is the most DHT provider records a node keeps.
	MaxProviderRecords = 100_000
	// MaxProviderRecordsPerPeer is the most DHT provider records of one
	// provider a node keeps.
	MaxProviderRecordsPerPeer = 10_000
)

// providerStore is the bounded datastore of a DHT's provider records
// (keys /providers/<key>/<provider>). It is safe for concurrent use.
type providerStore struct {
	ds.Batching // the records, in memory

	maxTotal, maxPerPeer int

	mu     sync.Mutex
	total  int
	byPeer map[string]map[string]struct{} // provider segment -> keys
}

func newProviderStore(maxTotal, maxPerPeer int) *providerStore {
	return &providerStore{
		Batching:   dssync.MutexWrap(ds.NewMapDatastore()),
		maxTotal:   maxTotal,
		maxPerPeer: maxPerPeer,
		byPeer:     make(map[string]map[string]struct{}),
	}
}

// providerOf is the provider segment of a record's key: its last.
func providerOf(k ds.Key) string {
	s := k.String()
	return s[strings.LastIndexByte(s, '/')+1:]
}

// Put stores a record, refreshing a held one; a new record past the caps
// is dropped or makes room as the package docs say. It never fails for
// the caps: the provider manager writes records in batches, and one
// failure would lose the whole batch.
func (s *providerStore) Put(ctx context.Context, k ds.Key, v []byte) error {
	p, key := providerOf(k), k.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.byPeer[p]
	if _, ok := keys[key]; ok {
		return s.Batching.Put(ctx, k, v)
	}
	if len(keys) >= s.maxPerPeer {
		return nil
	}
	if s.total >= s.maxTotal {
		if err := s.evictLocked(ctx); err != nil {
			return err
		}
	}
	if err := s.Batching.Put(ctx, k, v); err != nil {
		return err
	}
	if keys == nil {
		keys = make(map[string]struct{})
		s.byPeer[p] = keys
	}
	keys[key] = struct{}{}
	s.total++
	return nil
}

// evictLocked deletes a record of the provider holding the most.
func (s *providerStore) evictLocked(ctx context.Context) error {
	var heaviest string
	for p, keys := range s.byPeer {
		if len(keys) > len(s.byPeer[heaviest]) {
			heaviest = p
		}
	}
	for key := range s.byPeer[heaviest] {
		return s.deleteLocked(ctx, ds.RawKey(key))
	}
	return nil
}

// Delete removes a record.
func (s *providerStore) Delete(ctx context.Context, k ds.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleteLocked(ctx, k)
}

func (s *providerStore) deleteLocked(ctx context.Context, k ds.Key) error {
	if err := s.Batching.Delete(ctx, k); err != nil {
		return err
	}
	p, key := providerOf(k), k.String()
	if keys := s.byPeer[p]; keys != nil {
		if _, ok := keys[key]; ok {
			delete(keys, key)
			s.total--
			if len(keys) == 0 {
				delete(s.byPeer, p)
			}
		}
	}
	return nil
}

// Batch returns a batch whose Put and Delete go through the caps.
func (s *providerStore) Batch(ctx context.Context) (ds.Batch, error) {
	return ds.NewBasicBatch(s), nil
}

// Len is the number of records held.
func (s *providerStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

var _ ds.Batching = (*providerStore)(nil)
