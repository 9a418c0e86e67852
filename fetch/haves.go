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
// A want-have of a block this node lacks stays boxo's (its DONT_HAVE), and
// is noted: when the block arrives (Fetcher.keep) the guard sends its HAVE
// at once too, where boxo's would again wait behind the blocks (a node's
// neighbours learnt that it had taken a leaf only when they asked again).
// boxo still sends its own HAVE later, a duplicate of a few bytes. HAVEs
// cost no serving budget: the blocks they bring asked for are paced as
// before.
const (
	// haveBacklog bounds the HAVEs waiting to be sent to one peer (boxo's
	// server keeps at most 1024 wants per peer); past it, boxo answers.
	haveBacklog = 1024
	// haveSendTimeout bounds one HAVE message's send.
	haveSendTimeout = 5 * time.Second
	// waitingPerPeer bounds the want-haves of blocks not held noted per
	// peer, waitingMax those of all peers (a few MB at most); past them,
	// boxo alone answers when the block comes.
	waitingPerPeer = 256
	waitingMax     = 1 << 15
	// waitingFor is how long a noted want-have is kept: a peer that got
	// the block elsewhere may never cancel (Helia's bitswap sends no
	// cancels), and room is made from the oldest first.
	waitingFor = 30 * time.Second
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
	waiting waitingWants          // want-haves of blocks not held, for arrived
	onNote  func()                // tests: called after a want-have is noted
	closed  bool
	wg      sync.WaitGroup
}

func newHaveAnswers(ctx context.Context, has func(context.Context, cid.Cid) (bool, error), send func(context.Context, peer.ID, bsmsg.BitSwapMessage) error) *haveAnswers {
	return &haveAnswers{ctx: ctx, has: has, send: send, pending: make(map[peer.ID][]cid.Cid), waiting: newWaitingWants()}
}

// answer sends p a HAVE of each block m asks HAVE of that the store holds
// and returns m without those wants. It notes the want-haves of blocks not
// held (arrived) and forgets those m cancels or asks the block of.
func (h *haveAnswers) answer(p peer.ID, m bsmsg.BitSwapMessage) bsmsg.BitSwapMessage {
	var held, lacked, dropped []cid.Cid
	for _, e := range m.Wantlist() {
		if e.Cancel || e.WantType != bspb.Message_Wantlist_Have {
			dropped = append(dropped, e.Cid)
			continue
		}
		if ok, err := h.has(h.ctx, e.Cid); err == nil && ok {
			held = append(held, e.Cid)
		} else if err == nil {
			lacked = append(lacked, e.Cid)
		}
	}
	h.note(p, m.Full(), lacked, dropped)
	for _, c := range h.queue(p, held) {
		m.Remove(c)
	}
	return m
}

// note records p's want-haves of blocks not held, after forgetting all of
// p's (a full want list replaces the last) or those dropped.
func (h *haveAnswers) note(p peer.ID, full bool, lacked, dropped []cid.Cid) {
	if !full && len(lacked) == 0 && len(dropped) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	if full {
		h.waiting.forget(p)
	}
	for _, c := range dropped {
		h.waiting.remove(p, c)
	}
	now := time.Now()
	for _, c := range lacked {
		h.waiting.add(p, c, now)
	}
	if len(lacked) > 0 && h.onNote != nil {
		h.onNote()
	}
}

// arrived sends a HAVE of c, now held, to the peers whose want-have of it
// was noted.
func (h *haveAnswers) arrived(c cid.Cid) {
	h.mu.Lock()
	ps := h.waiting.take(c, time.Now())
	h.mu.Unlock()
	for _, p := range ps {
		h.queue(p, []cid.Cid{c})
	}
}

// gone forgets what p asked: its connection closed.
func (h *haveAnswers) gone(p peer.ID) {
	h.mu.Lock()
	h.waiting.forget(p)
	h.mu.Unlock()
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

// waitingWants are want-haves of blocks not held, by peer and by CID,
// within waitingPerPeer, waitingMax and waitingFor. Not safe for
// concurrent use (haveAnswers.mu guards it).
type waitingWants struct {
	byPeer map[peer.ID]map[cid.Cid]time.Time
	byCid  map[cid.Cid]map[peer.ID]struct{}
	n      int
}

func newWaitingWants() waitingWants {
	return waitingWants{byPeer: make(map[peer.ID]map[cid.Cid]time.Time), byCid: make(map[cid.Cid]map[peer.ID]struct{})}
}

// add notes p's want-have of c at now, making room from p's expired
// wants if p is at waitingPerPeer; nothing is noted past the bounds.
func (w *waitingWants) add(p peer.ID, c cid.Cid, now time.Time) {
	cs := w.byPeer[p]
	if _, ok := cs[c]; ok {
		cs[c] = now
		return
	}
	if len(cs) >= waitingPerPeer {
		for old, at := range cs {
			if now.Sub(at) >= waitingFor {
				w.remove(p, old)
			}
		}
	}
	if len(w.byPeer[p]) >= waitingPerPeer || w.n >= waitingMax {
		return
	}
	if cs = w.byPeer[p]; cs == nil {
		cs = make(map[cid.Cid]time.Time)
		w.byPeer[p] = cs
	}
	cs[c] = now
	if w.byCid[c] == nil {
		w.byCid[c] = make(map[peer.ID]struct{})
	}
	w.byCid[c][p] = struct{}{}
	w.n++
}

// remove forgets p's want of c.
func (w *waitingWants) remove(p peer.ID, c cid.Cid) {
	cs := w.byPeer[p]
	if _, ok := cs[c]; !ok {
		return
	}
	delete(cs, c)
	if len(cs) == 0 {
		delete(w.byPeer, p)
	}
	delete(w.byCid[c], p)
	if len(w.byCid[c]) == 0 {
		delete(w.byCid, c)
	}
	w.n--
}

// forget forgets every want of p.
func (w *waitingWants) forget(p peer.ID) {
	for c := range w.byPeer[p] {
		w.remove(p, c)
	}
}

// take forgets the wants of c and returns the peers whose want was within
// waitingFor of now.
func (w *waitingWants) take(c cid.Cid, now time.Time) []peer.ID {
	var ps []peer.ID
	for p := range w.byCid[c] {
		if now.Sub(w.byPeer[p][c]) < waitingFor {
			ps = append(ps, p)
		}
		w.remove(p, c)
	}
	return ps
}
