// The Reader's requests to its sources (the store, peers, the origin) and
// what happens to a leaf that arrives: verified, recorded, kept.

package fetch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/store"
)

// newReq makes a request with its own context. The caller holds mu.
func (r *Reader) newReq() *req {
	ctx, cancel := context.WithCancel(r.ctx)
	return &req{ctx: ctx, cancel: cancel}
}

func (r *Reader) goLocal(i int, l store.Leaf, q *req) {
	ctx := q.ctx
	r.mu.Lock()
	readBack := r.st[i].dropped
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		b, err := r.f.readLocal(ctx, l.Cid, readBack)
		if err != nil {
			r.mu.Lock()
			if r.st[i].local == q {
				r.st[i].local, r.st[i].inStore = nil, false // gone from the store: ask the network
			}
			r.mu.Unlock()
			q.cancel()
			r.wake()
			return
		}
		r.deliver(i, b.RawData(), SourceLocal, "", q)
	}()
}

// peerBatch is one bitswap request for the leaves that entered the window
// together: asked in one call, in file order, so that the session gives
// them decreasing priorities and the peer sends them in the order the
// reader needs. Its wants end when every leaf in it is delivered or given
// up (won by another source, left behind by a Seek).
type peerBatch struct {
	ctx    context.Context
	cancel context.CancelFunc
	left   atomic.Int32
}

func (r *Reader) newBatch() *peerBatch {
	ctx, cancel := context.WithCancel(r.ctx)
	return &peerBatch{ctx: ctx, cancel: cancel}
}

// newReq is a leaf's share of the batch: cancelling it gives the leaf up;
// the batch's wants are cancelled with the last leaf.
func (b *peerBatch) newReq() *req {
	b.left.Add(1)
	var once sync.Once
	return &req{ctx: b.ctx, cancel: func() {
		once.Do(func() {
			if b.left.Add(-1) == 0 {
				b.cancel()
			}
		})
	}}
}

// goPeers asks the session for the leaves idx (in file order; the reader
// is at leaf cur) and delivers each block as it comes.
func (r *Reader) goPeers(idx []int, cur int, leaves []store.Leaf, reqs []*req, b *peerBatch) {
	cids := make([]cid.Cid, len(idx))
	dist := make([]int, len(idx))
	where := make(map[cid.Cid][]int, len(idx)) // a CID can be several leaves
	reqOf := make(map[int]*req, len(idx))
	for k, i := range idx {
		c := leaves[i].Cid
		cids[k] = c
		dist[k] = i - cur
		where[c] = append(where[c], i)
		reqOf[i] = reqs[k]
	}
	r.f.guard.order(cids, dist)
	first := r.askFirst(idx, leaves, reqs) // firstwant.go
	r.mu.Lock()
	sess := r.leafSess
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer b.cancel()
		first.lead() // firstwant.go
		ch, err := sess.GetBlocks(b.ctx, cids)
		if err == nil {
			for blk := range ch {
				c := blk.Cid()
				p := r.f.guard.senderOf(c)
				if p == "" {
					continue // our own copy (from the origin) that ended the want
				}
				skip := r.f.direct.took(first, c) // the leaf the first want delivered
				for _, i := range where[c] {
					if i != skip {
						r.deliver(i, blk.RawData(), SourcePeer, p, reqOf[i])
					}
				}
			}
		}
		// The batch ended: leaves it did not deliver may be asked again.
		r.mu.Lock()
		for i, q := range reqOf {
			if r.st[i].peer == q {
				r.st[i].peer = nil
			}
		}
		r.mu.Unlock()
		r.wake()
	}()
}

// testHookGoOrigin, set by tests, runs as goOrigin starts, without the
// lock.
var testHookGoOrigin func(r *Reader, i int)

func (r *Reader) goOrigin(i int, l store.Leaf, q *req) {
	if h := testHookGoOrigin; h != nil {
		h(r, i)
	}
	ctx := q.ctx
	if r.t.URL != "" {
		// One read of the whole file fulfils q with the others, and
		// while one is under way (it may have found that the origin
		// honours Range after all), it does. A whole read that ended
		// since the plan has fulfilled q or given it up (q is stale):
		// beginning another for q read the file a second time (under
		// -race on a loaded machine, between two leaves of one plan).
		ignores := r.f.ignoresRange(r.t.URL)
		r.mu.Lock()
		stale := r.st[i].origin != q
		if !stale && r.whole == nil && ignores && len(r.leaves) > 1 {
			r.whole = r.newReq()
			r.goWhole(r.whole)
		}
		whole := r.whole != nil
		r.mu.Unlock()
		if whole || stale {
			return
		}
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		data, own, err := r.f.originShared(ctx, r.t, l, r.noteOriginSent, &r.lastByte)
		q.shared.Store(err == nil && !own)
		r.mu.Lock()
		if err != nil && r.st[i].origin == q {
			r.st[i].origin = nil
			r.originBusy--
		}
		if err != nil && ctx.Err() == nil && errors.Is(err, errSlept) {
			// Cut because this process slept through it (watchdog): the
			// origin did nothing wrong; the leaf is asked again.
			r.mu.Unlock()
			r.f.log.Info("origin request cut after a sleep: asked again", "cid", l.Cid)
			q.cancel()
			r.wake()
			return
		}
		if err != nil && ctx.Err() == nil {
			r.stats.OriginErrors++
			r.originFail++
			var ve *VerifyError
			if errors.As(err, &ve) || r.originFail >= 3 || originFatal(err) {
				r.originDead = err
			}
			// A changed file fails the fetch at once unless peers may
			// still give the content the Target names (the schedule then
			// gives up as for any dead origin).
			changed := errors.Is(err, ErrChanged) && r.noPeerHope()
			r.mu.Unlock()
			if ve != nil {
				r.f.rejected(ve)
			}
			if changed {
				r.fail(fmt.Errorf("%w: %s: %w", ErrUnavailable, r.t.Cid, err))
			}
			r.f.log.Info("origin failed", "cid", l.Cid, "err", err)
			q.cancel()
			r.wake()
			return
		}
		if err == nil {
			r.originFail = 0
		}
		r.mu.Unlock()
		if err != nil {
			q.cancel()
			return
		}
		r.deliver(i, data, SourceOrigin, "", q)
	}()
}

// noteOriginSent adds n bytes the origin sent for this fetch (a
// meteredBody's count, told as they come) to its stats and the Fetcher's.
func (r *Reader) noteOriginSent(n int64) {
	r.lastByte.Store(time.Now().UnixNano())
	r.mu.Lock()
	r.stats.OriginSentBytes += n
	r.mu.Unlock()
	r.f.noteOriginSent(n)
}

// deliver takes the verified bytes of leaf i from a source: the first copy
// wins and the other requests for the leaf are cancelled.
func (r *Reader) deliver(i int, data []byte, src Source, p peer.ID, from *req) {
	now := time.Now()
	r.lastByte.Store(now.UnixNano())
	if data == nil {
		data = []byte{} // the empty leaf: present, not missing
	}
	n := int64(len(data))
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	s := &r.st[i]
	l := r.leaves[i]
	// A copy is a duplicate if another won: the winner cancelled and
	// forgot every request for the leaf, this one included.
	if s.data != nil || (s.local != from && s.peer != from && s.origin != from) {
		if from.moved.Load() { // the copy the leaf's new request gets as well
			r.mu.Unlock()
			from.cancel()
			return
		}
		r.stats.DuplicateBytes += n
		r.mu.Unlock()
		from.cancel()
		r.f.account(src, p, n, true)
		return
	}
	r.cancelLocked(s)
	if l.Size >= 0 && n != l.Size {
		// Authentic bytes (they hash to the leaf's CID) of another length
		// than the root or the Target says: read as described, a short leaf
		// gave Read (0, nil) for ever and a Seek past its end a panic, a
		// long one bytes of the wrong offsets.
		r.mu.Unlock()
		r.f.account(src, p, n, true)
		r.fail(&MalformedError{Root: r.t.Cid, Leaf: l.Cid, Size: n, Declared: l.Size})
		return
	}
	if src == SourceLocal && s.dropped {
		// A leaf the window let go of, read back from the store: it was
		// counted when it was fetched.
		s.dropped = false
		s.data = data
		r.notifyLocked()
		r.mu.Unlock()
		r.wake()
		return
	}
	first := r.recordLocked(i, data, src, p, now)
	r.notifyLocked()
	r.mu.Unlock()
	counted := src
	if src == SourceOrigin && from != nil && from.shared.Load() {
		counted = SourceLocal // one origin request, counted once in the totals
	}
	r.f.account(counted, p, n, false)
	r.f.log.Debug("block", "cid", l.Cid, "source", string(src), "peer", p, "bytes", n)
	if first && src != SourceLocal {
		r.f.guard.arrived(l.Cid, p)
		r.keepCounted(i, l, data, src)
	}
	r.wake()
}

// keepCounted stores leaf i, counting it in the Fetcher's store backlog
// (backlog.go) until it is stored. A leaf from a peer is stored on a
// goroutine of its own, so that the batch that delivered it takes its next
// block at once: stored in the batch's loop, the blocks behind it waited
// in bitswap's channels, uncounted, received but neither readable nor
// holding back the peer (16 MiB of them at the fast reader's peak in
// BenchmarkFetchMemory). Counted from now, they hold back the next blocks
// peers send instead. A leaf from the origin is stored in the request
// that fetched it, which keeps the origin's requests to their limit.
func (r *Reader) keepCounted(i int, l store.Leaf, data []byte, src Source) {
	n := int64(len(data))
	r.f.backlog.add(n)
	keep := func() {
		r.keepLeaf(i, l, data, src)
		r.f.backlog.done(n)
	}
	if src != SourcePeer {
		keep()
		return
	}
	r.wg.Go(func() {
		keep()
		r.wake()
	})
}

// recordLocked holds the first copy of leaf i for the reader and counts
// it. It reports whether the leaf had never been fetched before. The
// caller holds mu.
func (r *Reader) recordLocked(i int, data []byte, src Source, p peer.ID, now time.Time) bool {
	s := &r.st[i]
	n := int64(len(data))
	cur := r.curLeaf()
	if i >= cur && i < cur+r.f.cfg.ReadAhead {
		s.data = data // past the window only until it is stored (keepLeaf)
	}
	if r.leaves[i].Size < 0 {
		r.leaves[i].Size = n
		r.size = n
		r.stats.Size = n
	}
	first := !s.fetched
	s.fetched, s.dropped = true, false
	if first {
		r.fetched++
		s.fetchedAt = now
		if src == SourcePeer {
			s.from = p
		}
		if src == SourceLocal {
			s.kept = true
			r.kept++
		}
	}
	switch src {
	case SourceLocal:
		r.stats.LocalBytes += n
	case SourcePeer:
		r.stats.PeerBytes += n
		if p != "" {
			if r.stats.Peers == nil {
				r.stats.Peers = make(map[peer.ID]int64)
			}
			r.stats.Peers[p] += n
		}
		r.lastPeer = now
		r.peerTimes = append(r.peerTimes, now)
		if len(r.peerTimes) > peerRateWindow {
			r.peerTimes = r.peerTimes[1:]
		}
	case SourceOrigin:
		r.stats.OriginBytes += n
	}
	r.lastBlock = now
	if r.fetched == len(r.leaves) && r.stats.TTLB == 0 {
		r.stats.TTLB = now.Sub(r.start)
		if r.f.metrics != nil {
			r.f.metrics.ttlb.Observe(r.stats.TTLB.Seconds())
		}
	}
	return first
}

// keepLeaf stores a leaf fetched from the network. Once stored, a leaf
// past the window (Config.WindowBytes from the reader's position) is let
// go of and read back from the store when the reader nears it; one the
// store could not keep stays in memory.
func (r *Reader) keepLeaf(i int, l store.Leaf, data []byte, src Source) {
	b, err := blocks.NewBlockWithCid(data, l.Cid)
	if err == nil {
		err = r.f.keep(r.ctx, b, src)
	}
	r.mu.Lock()
	s := &r.st[i]
	if err == nil {
		s.kept = true
		r.kept++
		r.spareKeptLocked(i)
	} else {
		r.stats.NotKept++
	}
	r.mu.Unlock()
	if err != nil && r.ctx.Err() == nil {
		r.f.log.Debug("block not kept", "cid", l.Cid, "err", err)
	}
}

// spareKeptLocked lets go of the bytes of stored leaves that need not
// stay in memory, to be read back from the store when the reader nears
// them: leaf i, just stored, if it is past the window, and every stored
// leaf past the leaves read back ahead of the reader
// (Fetcher.readBackLeaves) if the reader has those already: it reads
// slower than leaves arrive (a player). A reader that keeps up finds the
// leaves it waits for in memory. The caller holds mu.
func (r *Reader) spareKeptLocked(i int) {
	if r.overQuotaLocked() {
		return // the store would evict them before they are read back
	}
	cur, rb, win := r.curLeaf(), r.f.readBackLeaves(), r.f.windowLeaves()
	spare := func(j int) {
		if s := &r.st[j]; s.data != nil && s.kept {
			s.data, s.dropped, s.inStore, s.localTried = nil, true, true, false
		}
	}
	if i >= cur+win {
		spare(i)
	}
	for j := cur; j < cur+rb; j++ {
		if j >= len(r.st) || r.st[j].data == nil {
			return // the reader waits, or is at the end
		}
	}
	for j := cur + rb; j < cur+win && j < len(r.st); j++ {
		spare(j)
	}
}

// aheadLocked is how many leaves from the position are fetched:
// Config.ReadAhead, or only the window (Config.WindowBytes) for content
// the store cannot keep whole (overQuotaLocked), whose leaves stay in
// memory until read. The caller holds mu.
func (r *Reader) aheadLocked() int {
	if r.overQuotaLocked() {
		return min(r.f.cfg.ReadAhead, r.f.windowLeaves())
	}
	return r.f.cfg.ReadAhead
}

// overQuotaLocked reports whether the content is larger than the store can
// hold beside what it has pinned (a store that tells its Usage). Leaves
// stored ahead of the reader and let go of were then evicted to make room
// for the next before the reader came to them, and fetched again: a file
// of 5 MiB through a store of 1 MiB cost the origin 7 MiB. The caller
// holds mu. It asks the store once, when the size is known.
func (r *Reader) overQuotaLocked() bool {
	if r.overQuota == 0 {
		u, ok := r.f.cfg.Store.(interface{ Usage() store.Usage })
		if !ok {
			r.overQuota = 2
		} else if r.size >= 0 {
			q := u.Usage()
			r.overQuota = 2
			if q.Quota >= 0 && r.size > q.Quota-q.Pinned {
				r.overQuota = 1
			}
		}
	}
	return r.overQuota == 1
}
