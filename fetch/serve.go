package fetch

import (
	"context"
	"fmt"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"golang.org/x/time/rate"
)

// servingStore is the blockstore bitswap's server reads from: it paces what
// is served to Config.ServeBytesPerSecond and lets at most
// Config.ServeConcurrency reads run at once. A block cannot be sent before
// it is read, so pacing the reads paces the sending. Blocks a peer wants
// urgently go ahead of the cap's queue (urgent.go).
type servingStore struct {
	Store
	limit  *rate.Limiter // nil: no cap
	sem    chan struct{} // nil: no cap
	urgent *urgentWants  // nil: none go ahead
	order  *serveOrder   // nil: reads are not noted
}

func newServingStore(s Store, bytesPerSec, burst int64, concurrency int, urgent *urgentWants, order *serveOrder) *servingStore {
	ss := &servingStore{Store: s, urgent: urgent, order: order}
	if bytesPerSec > 0 {
		// At least one block, so that a block of the largest size (a
		// leaf is at most 1 MiB) can be served at all.
		ss.limit = rate.NewLimiter(rate.Limit(bytesPerSec), int(min(max(burst, 1<<20), 1<<30)))
	}
	if concurrency > 0 {
		ss.sem = make(chan struct{}, concurrency)
	}
	return ss
}

// Get reads a block for a peer, waiting for a serving slot and for the
// byte budget. It waits for the budget before it reads, by the block's size
// from the store's index, so that a holder at its cap does not keep in
// memory the blocks it is not yet allowed to send. The read counts as in
// flight in the serving order (serveorder.go) until it is sent or fails.
func (s *servingStore) Get(ctx context.Context, c cid.Cid) (b blocks.Block, err error) {
	n := 0
	if s.limit != nil || s.order != nil {
		if n, err = s.Store.GetSize(ctx, c); err != nil {
			return nil, err
		}
	}
	s.order.reading(c, n, time.Now())
	defer func() {
		if err != nil {
			s.order.unread(c)
		}
	}()
	if s.sem != nil {
		select {
		case s.sem <- struct{}{}:
			defer func() { <-s.sem }()
		case <-ctx.Done():
			return nil, cancelled(c)
		}
	}
	if s.limit != nil && !s.ahead(c, n) {
		if err := s.wait(ctx, c, n); err != nil {
			return nil, err
		}
	}
	if fp, ok := s.Store.(forPeer); ok {
		return fp.GetForPeer(ctx, c) // the asking peer hashes it
	}
	return s.Store.Get(ctx, c)
}

// wait takes n bytes from the serving budget, a burst at a time.
func (s *servingStore) wait(ctx context.Context, c cid.Cid, n int) error {
	for n > 0 {
		k := min(n, s.limit.Burst())
		if err := s.limit.WaitN(ctx, k); err != nil {
			if ctx.Err() != nil {
				return cancelled(c)
			}
			return fmt.Errorf("fetch: serve %s: %w", c, err)
		}
		n -= k
	}
	return nil
}

// ahead takes n bytes of c, a block wanted urgently, from the serving
// budget without waiting, and reports whether it did: not if c is not
// urgent, or if the budget's debt would then pass one burst.
func (s *servingStore) ahead(c cid.Cid, n int) bool {
	now := time.Now()
	if !s.urgent.urgent(c, now) || s.limit.TokensAt(now)-float64(n) < -float64(s.limit.Burst()) {
		return false
	}
	return s.limit.ReserveN(now, n).OK() // not for more than a burst
}

// forPeer is a Store with a cheaper read for blocks served to peers, who
// check each block themselves (store.Store.GetForPeer).
type forPeer interface {
	GetForPeer(ctx context.Context, c cid.Cid) (blocks.Block, error)
}

// cancelled is what a read for a peer returns when bitswap's server gave up
// on it (the peer cancelled, or the server is stopping): not found, which
// bitswap takes quietly, where any other error is logged at ERROR level on
// the embedding app's stderr.
func cancelled(c cid.Cid) error { return ipld.ErrNotFound{Cid: c} }
