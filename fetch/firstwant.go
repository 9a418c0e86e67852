package fetch

import (
	"context"
	"sync"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/store"
)

// A peer hit in one round trip.
//
// A bitswap session's first message to the peers is a want-have broadcast;
// the want-block it sends a peer that answered HAVE waits in that peer's
// message queue, which sends at most one message per 20 ms (boxo's
// minSendMessageDelay, a constant; WithPerPeerSendDelay cannot go below
// it). So a peer hit cost about 22 ms on loopback, against 1 ms for a plain
// HTTP request, and 40 ms when the queue had sent anything (the cancels of
// the previous fetch) in the last 20 ms.
//
// When a provider of the content is known (Config.Providers: the provider
// table, a seed), the Reader therefore sends that provider a want-block of
// its own for the first leaf it asks of peers: one bitswap message, outside
// the session's queue (bsnet's one-shot SendMessage, through the guard),
// beside the session's want-haves, which go on as before and are the hedge:
// the other peers answer HAVE, and if the provider has not delivered when
// the queue lets the next message go, the session asks one of them for the
// block. The block comes back in one round trip.
//
// Bitswap only hands a session blocks it has recorded interest in, which it
// does in its own goroutine, so the block of the first want could arrive
// before the session wants it and be dropped. The guard therefore hands
// every copy of a first-wanted CID to the Reader itself (directWants), before
// bitswap sees it; the Reader's batch skips the session's copy of a block it
// was handed.
//
// What it costs, bounded: one want-block to one provider per fetch, for one
// leaf (at most 1 MiB). A copy of that leaf that arrives after another
// source delivered it (the session's hedge to another peer, or the origin)
// is counted in Stats.DuplicateBytes and Totals.DuplicateBytes (while the
// Reader is open); BenchmarkPeerHit sees at most 0.0013 such copies per
// fetch. If the leaf is delivered from elsewhere the want is cancelled at
// the provider. A provider that answers DONT_HAVE
// keeps the want, as bitswap servers do, and sends the block if it gets it
// (a node that announced a fetch under way); bitswap's session, told
// DONT_HAVE by a peer outside it, broadcasts its want-haves once more. A
// penalised provider is never asked and its messages never reach this path
// (the guard drops them first); a lying provider's block arrives under
// another CID and is caught by the guard as before; a silent one is judged
// after Config.StallTimeout as before.

// directWants are the CIDs the Fetcher's Readers asked a provider for
// directly, watched in every message the guard lets through. The zero value
// is ready; it is safe for concurrent use.
type directWants struct {
	mu sync.Mutex
	by map[cid.Cid]*directCid
}

type directCid struct {
	copies int // network copies received while watched
	ws     []*firstWant
}

// firstWant is a Reader's direct want-block for one leaf to one provider.
type firstWant struct {
	r   *Reader
	i   int     // the leaf
	c   cid.Cid // its CID
	p   peer.ID // the provider asked
	q   *req    // the leaf's share of the peer batch
	got chan firstCopy
	// sent is closed once the want is written (or failed)
	sent chan struct{}
	// done is closed once run has delivered the copy it was handed, or
	// given up on one
	done chan struct{}

	// guarded by the Fetcher's directWants.mu
	took       bool // a copy was handed over: the batch skips the session's
	over       bool // the batch ended before a copy came: w watches no more
	fromTarget bool // p sent a copy
}

type firstCopy struct {
	b blocks.Block
	p peer.ID
}

// cancelTimeout bounds sending a cancel for a direct want.
const cancelTimeout = 5 * time.Second

func (d *directWants) add(w *firstWant) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.by == nil {
		d.by = make(map[cid.Cid]*directCid)
	}
	dc := d.by[w.c]
	if dc == nil {
		dc = &directCid{}
		d.by[w.c] = dc
	}
	dc.ws = append(dc.ws, w)
}

func (d *directWants) remove(w *firstWant) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dc := d.by[w.c]
	if dc == nil {
		return
	}
	for k, x := range dc.ws {
		if x == w {
			dc.ws = append(dc.ws[:k], dc.ws[k+1:]...)
			break
		}
	}
	if len(dc.ws) == 0 {
		delete(d.by, w.c)
	}
}

// took returns the leaf w delivers if it was handed a copy of c, so that
// the batch skips the session's copy for it; -1 otherwise (and for nil w).
// It returns once w has delivered it: a batch that ended before would ask
// for the leaf again.
func (d *directWants) took(w *firstWant, c cid.Cid) int {
	if w == nil || !c.Equals(w.c) {
		return -1
	}
	d.mu.Lock()
	took := w.took
	d.mu.Unlock()
	if !took {
		return -1
	}
	<-w.done
	return w.i
}

// received is the guard's hook: it sees the verified blocks of each message
// it lets through, before bitswap does. The first copy of a watched CID goes
// to each Reader watching it; later copies are duplicates, counted.
func (d *directWants) received(f *Fetcher, p peer.ID, bs []blocks.Block) {
	if len(bs) == 0 {
		return
	}
	type dup struct {
		r *Reader
		n int64
	}
	var dups []dup
	var total int64
	d.mu.Lock()
	for _, b := range bs {
		dc := d.by[b.Cid()]
		if dc == nil {
			continue
		}
		n := int64(len(b.RawData()))
		dc.copies++
		if dc.copies > 1 {
			total += n
		}
		for _, w := range dc.ws {
			if w.over {
				continue
			}
			if w.p == p {
				w.fromTarget = true
			}
			if !w.took {
				w.took = true
				w.got <- firstCopy{b, p} // buffered; sent once
			} else if dc.copies > 1 {
				dups = append(dups, dup{w.r, n})
			}
		}
	}
	d.mu.Unlock()
	for _, x := range dups {
		x.r.mu.Lock()
		x.r.stats.DuplicateBytes += x.n
		x.r.mu.Unlock()
	}
	if total > 0 {
		f.account(SourcePeer, p, total, true)
	}
}

// askFirst is goPeers' hook, called once per peer batch: for the Reader's
// first batch, with a provider known, it asks the provider for the batch's
// first leaf (idx[0]) directly, and for a batch that asks a stuck leaf
// again, the holder stuckLocked chose. It returns the want (nil if none),
// which the batch consults to skip the session's copy of a block it was
// handed.
func (r *Reader) askFirst(idx []int, leaves []store.Leaf, reqs []*req) *firstWant {
	if len(idx) == 0 {
		return nil
	}
	r.mu.Lock()
	p := r.retarget
	if p != "" && r.retargetLeaf != idx[0] {
		p = "" // the stuck leaf came meanwhile
	}
	r.retarget = ""
	if p == "" {
		if r.askedFirst || r.prov != provSome {
			r.mu.Unlock()
			return nil
		}
		r.askedFirst = true
		p = r.firstProvider()
	}
	r.mu.Unlock()
	if p == "" {
		return nil
	}
	i := idx[0]
	w := &firstWant{r: r, i: i, c: leaves[i].Cid, p: p, q: reqs[0], got: make(chan firstCopy, 1), sent: make(chan struct{}), done: make(chan struct{})}
	r.f.direct.add(w)
	r.wg.Add(1)
	go w.run()
	return w
}

// firstProvider picks the provider to ask, penalised ones left out: the
// first of the fetch's connected providers that delivered blocks to this
// node within StallTimeout; else the first connected; else the first with
// an address to dial. In a crowd beside a seed every node's provider table
// listed the same crowd member first, and the seed, which served each of
// them, was asked second: the bench's 50 apps within 100 ms with a seed
// had the origin send 4.9 to 11.1 copies of the site, 1.3 to 5.7 asking a
// holder that served them (TestFirstWantToHolderThatDelivered). Picking
// the quickest of those by its time per block instead sent first wants to
// apps at their serving caps over the seed the table listed first (the
// default demo's offload 0.931 against 0.939, six interleaved runs). The
// caller holds mu.
func (r *Reader) firstProvider() peer.ID {
	h := r.f.cfg.Host
	var first, fallback peer.ID
	since := time.Now().Add(-r.f.cfg.StallTimeout)
	for _, p := range r.provs {
		if p == h.ID() || r.f.guard.isPenalised(p) {
			continue
		}
		if h.Network().Connectedness(p) == network.Connected {
			if r.f.guard.deliveries(p, since) > 0 {
				return p
			}
			if first == "" {
				first = p
			}
			continue
		}
		if fallback == "" && len(h.Peerstore().Addrs(p)) > 0 {
			fallback = p
		}
	}
	if first != "" {
		return first
	}
	return fallback
}

// run sends the want, delivers the first copy of the leaf the guard hands
// over (or gives up when the batch ends without one: the leaf came from the
// origin, or was left behind), cancels the want at the provider if the
// provider did not send the leaf, and stops watching when the Reader ends
// (so that late copies are counted as duplicates until then).
func (w *firstWant) run() {
	r := w.r
	f := r.f
	defer r.wg.Done()
	defer f.direct.remove(w)
	// The send goes apart: a copy of the leaf (from the session, say) may
	// come while the stream is still being opened, and must not wait for it.
	sendErr := make(chan error, 1)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		m := bsmsg.New(false)
		m.AddEntry(w.c, topPriority, pb.Message_Wantlist_Block, true)
		err := f.guard.SendMessage(w.q.ctx, w.p, m)
		close(w.sent)
		if err != nil {
			f.log.Debug("first want", "peer", w.p, "cid", w.c, "err", err)
		}
		sendErr <- err
	}()
	select {
	case fc := <-w.got:
		r.deliver(w.i, fc.b.RawData(), SourcePeer, fc.p, w.q)
	case <-w.q.ctx.Done():
		f.direct.mu.Lock()
		took := w.took
		w.over = !took // the leaf came otherwise or is given up
		f.direct.mu.Unlock()
		if took {
			fc := <-w.got // sent with took, under the lock
			r.deliver(w.i, fc.b.RawData(), SourcePeer, fc.p, w.q)
		}
	}
	close(w.done)
	// The leaf is in, or given up: if p did not send it, p need not.
	err := <-sendErr
	f.direct.mu.Lock()
	cancel := err == nil && !w.fromTarget
	f.direct.mu.Unlock()
	switch {
	case !cancel:
	case r.stillWanted(w):
		f.guard.owe(w.p, w.c) // cancelled when it comes, if from another
	default:
		f.cancelDirect(w.p, w.c)
	}
	<-r.ctx.Done()
}

// stillWanted reports whether w's leaf was asked again (req.again) and is
// still missing in an open Reader: w's want at the provider is then no
// longer w's alone, and its cancel is not sent. Sent, it went on a stream
// of its own, and could reach the provider after the new request's direct
// want (askFirst) to the same holder, which it then took out (the cancels
// a holder heeds, cancels.go): the holder sat on the leaf, and a fetch from
// one peer at its serving cap beside a changed origin failed after
// StallTimeout one time in 20 (TestChangedOriginPeersServe; a cancel of
// the re-asked want reached the holder 2 ms after the new one). The new
// request's wants end the holder's want when it ends: its direct want's
// cancel, or bitswap's once the leaf has come (guard.keepWanted); and the
// guard cancels w's want when the leaf comes from another (guard.owe).
func (r *Reader) stillWanted(w *firstWant) bool {
	if !w.q.again.Load() {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.closed && r.err == nil && !r.st[w.i].fetched
}

// firstLead bounds how long the batch's session waits for the direct want
// to be written (a stream opened and the message sent) before it sends its
// own want-haves, so that the provider usually takes the want-block first.
// The two go on different streams, so the provider may still take the
// want-have first; it then answers HAVE as well, which costs nothing but
// the message. (Taking the want-have out of the session's message, or
// turning it into a want-block, was tried: the first lost the only want
// when the direct one was lost, the second made the provider send the block
// twice in about half of the fetches.)
const firstLead = 2 * time.Millisecond

// lead is goPeers' hook before the session is asked. Nil w: no wait.
func (w *firstWant) lead() {
	if w == nil {
		return
	}
	t := time.NewTimer(firstLead)
	defer t.Stop()
	select {
	case <-w.sent:
	case <-t.C:
	case <-w.q.ctx.Done():
	}
}

// cancelDirect tells p that the want for c is over, on a stream of its
// own. The caller runs in a Reader's goroutine, which Close waits for
// before the Fetcher's.
func (f *Fetcher) cancelDirect(p peer.ID, c cid.Cid) {
	m := bsmsg.New(false)
	m.Cancel(c)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		ctx, cancel := context.WithTimeout(f.ctx, cancelTimeout)
		defer cancel()
		if err := f.guard.SendMessage(ctx, p, m); err != nil {
			f.log.Debug("cancel", "peer", p, "cid", c, "err", err)
		}
	}()
}
