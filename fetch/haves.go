package fetch

import (
	"context"
	"sync"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	bspb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// HAVEs answered outside boxo's server queue. boxo's server answers a
// want-have through the same task queue as the blocks it sends: its
// workers take one peer's tasks at a time, HAVEs and blocks together, and a
// holder at its serving cap (4 MiB/s in an app) sends 1 MiB blocks to its
// peers in turn. In the demo site's 50-app flash crowd the want-haves of
// leaves held for seconds by a node's neighbours went unanswered for 10-30
// s; the fetch, hearing no HAVE and nothing from the leaf's stripe owner,
// took it from the origin (policy.go, overdue), about 13 times per leaf.
// So the guard answers a want-have of a block this node holds itself, at
// once, in a message of its own, and hands boxo the want list without it.
// A want-have of a block this node lacks stays boxo's (its DONT_HAVE, and
// its HAVE once the block arrives). HAVEs cost no serving budget: the
// blocks they bring asked for are paced as before.
const (
	// haveBacklog bounds the HAVEs waiting to be sent to one peer (boxo's
	// server keeps at most 1024 wants per peer); past it, boxo answers.
	haveBacklog = 1024
	// haveSendTimeout bounds one HAVE message's send.
	haveSendTimeout = 5 * time.Second
)

// holds reports whether the store holds c (a Fetcher without one, in
// tests of the guard alone, holds nothing).
func (f *Fetcher) holds(ctx context.Context, c cid.Cid) (bool, error) {
	if f.cfg.Store == nil {
		return false, nil
	}
	return f.cfg.Store.Has(ctx, c)
}

// haveAnswers sends HAVEs, at most one message in flight per peer: the
// HAVEs asked for while one is sent go in the next.
type haveAnswers struct {
	ctx  context.Context
	has  func(context.Context, cid.Cid) (bool, error)
	send func(context.Context, peer.ID, bsmsg.BitSwapMessage) error

	mu      sync.Mutex
	pending map[peer.ID][]cid.Cid // HAVEs to send; a key while p's sender runs
	closed  bool
	wg      sync.WaitGroup
}

func newHaveAnswers(ctx context.Context, has func(context.Context, cid.Cid) (bool, error), send func(context.Context, peer.ID, bsmsg.BitSwapMessage) error) *haveAnswers {
	return &haveAnswers{ctx: ctx, has: has, send: send, pending: make(map[peer.ID][]cid.Cid)}
}

// answer sends p a HAVE of each block m asks HAVE of that the store holds
// and returns m without those wants.
func (h *haveAnswers) answer(p peer.ID, m bsmsg.BitSwapMessage) bsmsg.BitSwapMessage {
	var held []cid.Cid
	for _, e := range m.Wantlist() {
		if e.Cancel || e.WantType != bspb.Message_Wantlist_Have {
			continue
		}
		if ok, err := h.has(h.ctx, e.Cid); err == nil && ok {
			held = append(held, e.Cid)
		}
	}
	for _, c := range h.queue(p, held) {
		m.Remove(c)
	}
	return m
}

// queue adds cs to p's HAVEs to send, as many as haveBacklog leaves room
// for, starts p's sender if none runs, and returns those it took.
func (h *haveAnswers) queue(p peer.ID, cs []cid.Cid) []cid.Cid {
	if len(cs) == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	q, running := h.pending[p]
	cs = cs[:min(len(cs), max(haveBacklog-len(q), 0))]
	h.pending[p] = append(q, cs...)
	if !running && len(cs) > 0 {
		h.wg.Add(1)
		go h.run(p)
	}
	return cs
}

// run sends p its pending HAVEs until there are none.
func (h *haveAnswers) run(p peer.ID) {
	defer h.wg.Done()
	for {
		h.mu.Lock()
		cs := h.pending[p]
		if len(cs) == 0 || h.closed {
			delete(h.pending, p)
			h.mu.Unlock()
			return
		}
		h.pending[p] = cs[:0:0]
		h.mu.Unlock()
		m := bsmsg.New(false)
		for _, c := range cs {
			m.AddHave(c)
		}
		ctx, cancel := context.WithTimeout(h.ctx, haveSendTimeout)
		_ = h.send(ctx, p, m) // a peer gone asks again, of whoever holds it
		cancel()
	}
}

// close stops the senders and waits for them; HAVEs not yet sent are
// dropped. The context given to newHaveAnswers must be done or ending.
func (h *haveAnswers) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.wg.Wait()
}
