package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/exchange"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/internal/wake"
	"github.com/meshcdn/meshcdn/store"
)

// Target says what to fetch and where its origin serves it.
type Target struct {
	// Cid is the file's root. Required.
	Cid cid.Cid
	// Size is the file's size in bytes. Required with Nodes; zero otherwise
	// means unknown (it is learnt from the DAG).
	Size int64
	// Nodes are the file's inner dag-pb nodes (a manifest carries them):
	// with them every leaf's CID is known before anything is fetched, so
	// leaves can come from a plain origin. Empty for a single-leaf file or
	// when unknown (then peers or the gateway give them).
	Nodes []blocks.Block
	// URL is the plain file at the origin; missing leaves are fetched from
	// it with HTTP Range requests (leaf i is bytes [i MiB, (i+1) MiB)) and
	// checked against their CIDs. Empty means none.
	URL string
	// Gateway is a trustless gateway's base URL (blocks are fetched as
	// GATEWAY/ipfs/CID?format=raw; a query of its own, such as a signed
	// URL's token, is kept). Used when URL is empty. Empty means none.
	Gateway string
}

func (t Target) hasOrigin() bool { return t.URL != "" || t.Gateway != "" }

// Stats is the accounting of one fetch.
type Stats struct {
	// Cid and Size are the content's root and size (Size is -1 while
	// unknown).
	Cid  cid.Cid
	Size int64
	// LocalBytes, PeerBytes and OriginBytes count the bytes delivered from
	// each source: the first verified copy of each leaf, once per delivery
	// (a leaf read again after a backwards Seek counts again when it is
	// fetched again, from the store as local; one still in memory is not
	// fetched). A leaf of an origin request another fetch of the same
	// content started counts as the origin's here (see Totals).
	LocalBytes, PeerBytes, OriginBytes int64
	// DuplicateBytes counts verified copies that lost the race.
	DuplicateBytes int64
	// Peers maps each peer to the bytes it delivered first.
	Peers map[peer.ID]int64
	// TTFB is the time from Open to the first byte handed to the reader;
	// TTLB from Open to the last leaf fetched. Zero until then.
	TTFB, TTLB time.Duration
	// Hedged reports that the origin was asked while peers were.
	Hedged bool
	// Complete reports that every leaf has been fetched; Stored that the
	// content was named in the store (and so announced) as a whole.
	Complete, Stored bool
	// NotKept counts leaves the store could not keep (quota): they were
	// streamed but not stored.
	NotKept int
	// OriginErrors counts failed origin requests.
	OriginErrors int
	// OriginSentBytes counts what the origin sent for this fetch's
	// requests, kept or not: every response body byte read, including
	// those thrown away (a hedge cut off, a copy that lost the race, bytes
	// skipped in a whole-file answer), plus for each body closed before its
	// end an estimate of the bytes in flight (the bandwidth-delay product
	// of that response, at most 256 KiB and what remained). Headers are
	// not counted.
	// A request shared with a concurrent fetch of the same leaf counts for
	// the fetch that started it.
	OriginSentBytes int64
	// OriginWastedBytes is what the origin sent that was not a first
	// verified copy: OriginSentBytes - OriginBytes, or 0.
	OriginWastedBytes int64
}

// Offload is PeerBytes / (PeerBytes + OriginBytes), or 0.
func (s Stats) Offload() float64 { return offload(s.PeerBytes, s.OriginBytes) }

// emptySHA256 is the multihash (hex) of the empty file under sha2-256.
const emptySHA256 = "1220e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

type provState int

const (
	provPending provState = iota
	provNone
	provSome
)

// req is one request for a leaf from one source.
type req struct {
	ctx    context.Context
	cancel context.CancelFunc
	// moved: the leaf was asked again on the same bitswap session
	// (peerHedgeLocked), which hands the one copy that comes to both
	// requests: this one's is no duplicate.
	moved atomic.Bool
	// again: the leaf was asked again (peerHedgeLocked, askAgainLocked
	// with keep), so the end of this request is no cue to cancel its
	// direct want (Reader.stillWanted).
	again atomic.Bool
	// shared: an origin request's bytes another fetch of this Fetcher
	// took as the origin's first (originShared): the Fetcher's totals
	// count them as local.
	shared atomic.Bool
}

type leafState struct {
	data       []byte // verified bytes, while in the read window
	fetched    bool   // delivered at least once
	kept       bool   // stored
	localTried bool
	since      time.Time // first asked of peers, while in the window
	inStore    bool      // the store holds it (as last looked)
	dropped    bool      // fetched and stored, let go of by the window (keepLeaf)
	originAt   time.Time // when origin was asked
	peerAt     time.Time // when peers were last asked
	fetchedAt  time.Time // when it first came
	from       peer.ID   // the peer it first came from ("": not from a peer)
	hedgedTo   peer.ID   // the serving holder it was asked of directly, if any (peerHedgeLocked)
	hedgedAt   time.Time // and when
	local      *req
	peer       *req
	origin     *req
}

// Reader streams one fetch in file order. Read blocks until the bytes at
// the position have arrived and been verified; Seek moves the position and
// the fetch window with it. A Reader is safe for concurrent use, but reads
// and seeks share one position. Close (or the end of the context given to
// Open) cancels everything the fetch started.
type Reader struct {
	f         *Fetcher
	t         Target
	ctx       context.Context
	cancel    context.CancelFunc
	start     time.Time
	sess      exchange.Fetcher
	kick      chan struct{}
	leafSess  exchange.Fetcher // the session leaves are asked on; under mu
	sessSince time.Time        // when leafSess started; under mu
	wg        sync.WaitGroup
	once      sync.Once
	lastByte  atomic.Int64 // unix ns of the last bytes any source sent (LastByte)
	overQuota int8         // overQuotaLocked: 0 not known yet, 1 yes, 2 no; under mu

	mu          sync.Mutex
	changed     chan struct{} // closed and replaced when state changes
	leaves      []store.Leaf  // nil until resolved
	cids        []cid.Cid     // registered with the guard
	nodes       []blocks.Block
	size        int64 // -1 while unknown
	pos         int64
	st          []leafState
	err         error
	closed      bool
	closedErr   error // what calls after close wrap: ErrClosed, or the Fetcher's
	stats       Stats
	prov        provState
	originOn    bool
	originHedge bool      // the origin only hedges the leaf the reader waits on (hedgesOnly)
	originSince time.Time // when the origin joined
	tookOver    time.Time // when a hedging origin took over (takesOver; zero: it has not, or hedges again)
	originDead  error
	originFail  int
	originBusy  int
	whole       *req // the whole-file read from an origin that ignores Range (whole.go)
	fetched     int
	kept        int
	finishing   bool
	advertised  bool          // Config.Advertiser was told of this fetch
	announcedAt time.Time     // when (zero: not yet)
	provs       []peer.ID     // providers connected for this fetch
	provsDone   bool          // the providers' silence has been judged
	lastBlock   time.Time     // last delivery from any source
	lastPeer    time.Time     // last delivery from a peer
	peerTimes   []time.Time   // the last peerRateWindow deliveries from peers
	waitSince   time.Time     // a Read has been waiting since
	waitedDry   time.Duration // waits ended, origin on, while no peer has delivered (crowdJudged)
	askedFirst  bool          // a provider was asked directly (firstwant.go)
	stripe      *stripe       // the split of origin leaves with the crowd (policy.go); nil: none
	holderKnown bool          // the crowd knows a holder of the whole content (holderKnownLocked)
	holderNear  bool          // one of them is connected to this node
	borne       bool          // a peer outside the stripe has delivered a leaf (borneLocked)
	addrless    []peer.ID     // providers known by ID only, dialled once their addresses come (dialAddrlessLocked)
	spare       []peer.ID     // providers not dialled for Config.PeerBudget (dialbudget.go)
	dialing     int           // this fetch's dials under way (dialbudget.go)
	addrlessAt  time.Time     // when dialAddrlessLocked looks again
	addrlessGap time.Duration // how long it waits after that (addrlessPoll, doubling)
	reaskAt     time.Time     // striping: leaves may be asked of peers again from then
	provAt      time.Time     // when the providers were last looked up
	trace       fetchTrace    // what the policy decided, logged when the fetch ends

	// addrlessSince is when the first of addrless was noted (zero: none
	// waits). retarget is a holder to ask directly for leaf retargetLeaf
	// (stuckLocked, refreshProviders; firstwant.go's askFirst).
	addrlessSince time.Time
	retarget      peer.ID
	retargetLeaf  int

	// sawFetching is the peers listed fetching the content during this
	// read (joinStateLocked): their DONT_HAVEs were of leaves they had yet
	// to fetch (waitedRefusedLocked).
	sawFetching map[peer.ID]struct{}

	// judged: the crowd members have been judged (unproven.go); alive:
	// those that showed a sign of life then.
	judged bool
	alive  map[peer.ID]bool
}

// fetchTrace is what a fetch's policy decided, for the debug log at its
// end. Under mu.
type fetchTrace struct {
	on                       bool           // the log takes debug records: the crowd's sizes are looked up
	crowdAtOpen, crowdAtJoin int            // crowd members known at Open and when the origin joined
	provAtOpen               bool           // a provider was known at Open
	joinWhy                  string         // why the origin joined ("" if it did not)
	joinAt                   time.Duration  // when, after Open
	originLeaves             map[string]int // leaves asked of the origin, by reason
	announcedAt              time.Duration  // when the fetch was announced, after Open (0: not)
}

// Open starts fetching t and returns a Reader positioned at 0. The fetch
// runs until the Reader is closed or ctx ends; only the leaves within
// Config.ReadAhead of the position are fetched, so a caller that stops
// reading stops the fetch. With no provider known (none in Config.Providers
// within Config.ProviderWait) the origin is asked at once; otherwise peers
// get Config.PeerTimeout first. Errors while fetching come from Read.
func (f *Fetcher) Open(ctx context.Context, t Target) (*Reader, error) {
	if !t.Cid.Defined() {
		return nil, fmt.Errorf("fetch: open: %w: no CID", ErrNoRoute)
	}
	if t.Size < 0 {
		return nil, fmt.Errorf("fetch: open %s: negative size", t.Cid)
	}
	if err := dagfile.CheckHash(t.Cid); err != nil {
		return nil, fmt.Errorf("fetch: open: %w: %v", ErrNoRoute, err)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, fmt.Errorf("fetch: open %s: %w", t.Cid, ErrClosed)
	}
	r := &Reader{f: f, t: t, start: time.Now(), kick: make(chan struct{}, 1), changed: make(chan struct{}), size: -1}
	r.ctx, r.cancel = context.WithCancel(ctx)
	f.readers[r] = struct{}{}
	f.totals.Fetches++
	// Open's own count, handed to run: a Close from now on (the
	// Fetcher's too) waits until the reader is started and stopped again,
	// not only for what was started before it.
	r.wg.Add(1)
	f.mu.Unlock()
	if testHookOpening != nil {
		testHookOpening(r)
	}

	r.stats.Cid = t.Cid
	r.stats.Size = -1
	r.lastBlock = r.start
	r.lastPeer = r.start
	if t.Size > 0 || (t.Size == 0 && len(t.Nodes) > 0) {
		r.size = t.Size
		r.stats.Size = t.Size
	}
	if len(t.Nodes) > 0 || t.Cid.Type() == cid.Raw {
		if err := r.setLeavesFromTarget(); err != nil {
			r.wg.Done()
			r.Close()
			return nil, err
		}
	}
	r.sess = f.bs.NewSession(r.ctx)
	r.leafSess, r.sessSince = r.sess, r.start
	r.provAt = r.start
	r.findProviders()
	r.mu.Lock()
	r.trace.provAtOpen = r.prov == provSome
	r.trace.on = f.log.Enabled(r.ctx, slog.LevelDebug)
	if r.trace.on && f.cfg.Crowd != nil {
		r.trace.crowdAtOpen = len(f.cfg.Crowd.Fetchers(t.Cid))
	}
	r.mu.Unlock()
	go r.run() // with Open's count
	return r, nil
}

// testHookOpening, when set by a test, runs in Open once the Reader is
// registered with its Fetcher and before it is started.
var testHookOpening func(*Reader)

func (r *Reader) setLeavesFromTarget() error {
	t := r.t
	var leaves []store.Leaf
	if t.Cid.Type() == cid.Raw {
		size := int64(-1)
		if r.size >= 0 {
			size = r.size
		}
		if t.Cid.Hash().HexString() == emptySHA256 {
			size = 0 // the empty file: Size 0 is not "unknown" here
		}
		if size > dagfile.ChunkSize {
			return fmt.Errorf("fetch: open %s: size %d too big for a single leaf", t.Cid, size)
		}
		leaves = []store.Leaf{{Cid: t.Cid, Offset: 0, Size: size}}
	} else {
		var err error
		leaves, err = store.Leaves(r.ctx, dagfile.NewNodes(t.Nodes), t.Cid, t.Size)
		if err != nil {
			return fmt.Errorf("fetch: open %s: %w", t.Cid, err)
		}
		r.nodes = t.Nodes
	}
	r.setLeaves(leaves)
	return nil
}

// setLeaves installs the leaf list. The caller holds mu or owns r alone.
func (r *Reader) setLeaves(leaves []store.Leaf) {
	r.leaves = leaves
	r.st = make([]leafState, len(leaves))
	r.cids = make([]cid.Cid, len(leaves))
	for i, l := range leaves {
		r.cids[i] = l.Cid
	}
	r.f.guard.want(r.cids)
	if n := len(leaves); n > 0 && leaves[n-1].Size >= 0 {
		r.size = leaves[n-1].Offset + leaves[n-1].Size
		r.stats.Size = r.size
	}
	r.notifyLocked()
}

func (r *Reader) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Reader) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run resolves the leaves if needed, then schedules requests until the
// fetch ends.
func (r *Reader) run() {
	defer r.wg.Done()
	r.mu.Lock()
	resolved := r.leaves != nil
	r.mu.Unlock()
	if !resolved {
		if err := r.resolve(); err != nil {
			r.fail(err)
			return
		}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next, done := r.schedule()
		if done {
			return
		}
		timer.Reset(max(time.Until(next), 0))
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		case <-timer.C:
		}
		r.afterWait(next, time.Now())
	}
}

// afterWait is run's look at the clock after each wait for due. A wait
// that ended wake.Late or more after due found the process itself not
// running (a laptop that slept, where the monotonic clock counts the sleep,
// as on Windows; a stopped process): the sources get StallTimeout from now.
// Before, a fetch with no origin under way through such a sleep failed at
// the wake, "no block from any source" for as long as the sleep.
func (r *Reader) afterWait(due, now time.Time) {
	if !wake.Slept(due, now) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.After(r.lastBlock) {
		r.lastBlock = now
	}
	r.f.log.Debug("fetch: this process slept through a fetch", "cid", r.t.Cid, "late", now.Sub(due).Round(time.Millisecond))
}

// resolve learns the leaves of a dag-pb root opened without its nodes, from
// the store, peers or the gateway.
func (r *Reader) resolve() error {
	g := &nodeFetcher{r: r}
	var leaves []store.Leaf
	total, err := dagfile.Walk(r.ctx, g, r.t.Cid, 0, nil, func(l dagfile.Leaf) error {
		leaves = append(leaves, store.Leaf(l))
		return nil
	})
	if err != nil {
		if r.ctx.Err() != nil {
			return fmt.Errorf("fetch: %s: %w", r.t.Cid, r.ctx.Err())
		}
		return fmt.Errorf("fetch: resolve %s: %w", r.t.Cid, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.t.Size > 0 && total != r.t.Size {
		return fmt.Errorf("fetch: resolve %s: DAG holds %d bytes, Target.Size is %d", r.t.Cid, total, r.t.Size)
	}
	r.nodes = g.nodes
	r.setLeaves(leaves)
	return nil
}

// nodeFetcher gets inner nodes for resolve: from the store, else from peers
// (and after PeerTimeout from the gateway, if any).
type nodeFetcher struct {
	r     *Reader
	nodes []blocks.Block
}

func (g *nodeFetcher) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	r := g.r
	f := r.f
	b, err := f.cfg.Store.Get(ctx, c)
	if err == nil {
		g.nodes = append(g.nodes, b)
		return b, nil
	}
	if !ipld.IsNotFound(err) {
		return nil, err
	}
	f.guard.want([]cid.Cid{c})
	defer f.guard.unwant([]cid.Cid{c})
	f.guard.order([]cid.Cid{c}, []int{0})
	wait := f.cfg.StallTimeout
	if r.t.Gateway != "" {
		wait = f.cfg.PeerTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	b, err = r.sess.GetBlock(pctx, c)
	cancel()
	if err != nil && r.t.Gateway != "" && ctx.Err() == nil {
		var data []byte
		data, err = f.originLeaf(ctx, Target{Gateway: r.t.Gateway}, store.Leaf{Cid: c, Size: -1}, r.noteOriginSent)
		if err == nil {
			b, err = blocks.NewBlockWithCid(data, c)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if r.t.Gateway == "" && errors.Is(err, context.DeadlineExceeded) {
			// The wait for peers ran out, not the caller's context.
			err = fmt.Errorf("no peer sent it within %v, and there is no gateway to ask", wait)
		}
		return nil, fmt.Errorf("%w: inner node %s: %v", ErrNoRoute, c, err)
	}
	g.nodes = append(g.nodes, b)
	return b, nil
}

// curLeaf is the index of the leaf holding the position. While the size
// is unknown (a single leaf opened by CID alone, before it arrives) that
// is the leaf whatever the position: only the leaf tells where it ends.
// The caller holds mu.
func (r *Reader) curLeaf() int {
	i := int(r.pos / dagfile.ChunkSize)
	if r.size < 0 && len(r.leaves) > 0 {
		return min(i, len(r.leaves)-1)
	}
	return min(i, len(r.leaves))
}

// LastByte is when a source last sent this fetch bytes: an origin's
// response body as it comes, a peer's or the store's leaf as it arrives;
// the fetch's start if none has yet. A leaf is read only once it has all
// arrived and been verified; LastByte tells a caller waiting on a large
// leaf from a slow origin that bytes are coming (the gateway's
// FirstByteTimeout counts from it), and so does one waiting on an origin
// request another fetch of the same leaf started. Safe for concurrent use.
func (r *Reader) LastByte() time.Time {
	if ns := r.lastByte.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return r.start
}

// finishTimeout bounds naming content in the store after its reader closed.
const finishTimeout = 10 * time.Second

// finish names the content in the store once all of it is there, which is
// what announces it.
func (r *Reader) finish(ctx context.Context) {
	for _, b := range r.nodes {
		if err := r.f.cfg.Store.Put(ctx, b); err != nil {
			r.f.log.Debug("inner node not kept", "cid", b.Cid(), "err", err)
			return
		}
	}
	if err := r.f.cfg.Store.AddRoot(ctx, r.t.Cid, false); err != nil {
		r.f.log.Debug("content not kept whole", "cid", r.t.Cid, "err", err)
		return
	}
	r.mu.Lock()
	r.stats.Stored = true
	r.mu.Unlock()
}

func (r *Reader) fail(err error) {
	r.mu.Lock()
	if r.err == nil && !r.closed {
		r.err = err
		r.notifyLocked()
	}
	r.mu.Unlock()
	r.f.log.Info("fetch failed", "cid", r.t.Cid, "err", err)
}

// Read reads the next bytes in file order, waiting for them to arrive and
// be verified. It returns io.EOF at the end, the fetch's error if it failed
// (blocks fetched so far stay in the store), and an error wrapping
// ErrClosed after Close.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		chunk, at, err := r.next()
		if err != nil {
			return 0, err
		}
		// Another Read took these bytes, or a Seek moved the position,
		// since next: read at the position as it is now.
		if n, ok := r.take(at, len(chunk), func(k int) int { return copy(p, chunk[:k]) }); ok {
			return n, nil
		}
	}
}

// WriteTo writes the rest of the content to w, leaf by leaf as each
// arrives (io.WriterTo: io.Copy uses it, saving a copy per read). It
// returns the bytes written and the first error, io.EOF excepted.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		chunk, at, err := r.next()
		if len(chunk) > 0 {
			if _, ok := r.take(at, len(chunk), func(k int) int { return k }); !ok {
				continue // taken by a concurrent Read, or a Seek moved the position
			}
			n, werr := w.Write(chunk)
			total += int64(n)
			if n < len(chunk) {
				r.giveBack(at+int64(len(chunk)), len(chunk)-n)
			}
			if werr != nil {
				return total, werr
			}
			if n < len(chunk) {
				return total, io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// take claims the bytes at position at, up to avail of them: if the
// position is still at, it calls use(avail), which returns how many it
// used, and moves the position past those, all under the lock, so that
// concurrent Reads never return the same bytes. It reports false when a
// Read or a Seek moved the position since next returned at.
func (r *Reader) take(at int64, avail int, use func(k int) int) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pos != at {
		return 0, false
	}
	n := use(avail)
	i := r.curLeaf()
	r.pos += int64(n)
	if r.curLeaf() != i {
		r.wake()
	}
	return n, true
}

// giveBack moves the position back by n from end, the bytes a short write
// did not take, unless a Read or Seek moved it since.
func (r *Reader) giveBack(end int64, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pos == end {
		r.pos -= int64(n)
		r.wake()
	}
}

// next waits for the bytes at the position and returns them up to the end
// of their leaf, with the position they start at, without moving it. The
// slice is never written to: a leaf's bytes do not change once verified.
func (r *Reader) next() ([]byte, int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.closed {
			return nil, 0, fmt.Errorf("fetch: read %s: %w", r.t.Cid, r.closedErr)
		}
		if r.leaves != nil && r.size >= 0 && r.pos >= r.size {
			return nil, 0, io.EOF
		}
		if r.leaves != nil {
			i := r.curLeaf()
			if i < len(r.leaves) && r.st[i].data != nil {
				r.endWaitLocked()
				if r.stats.TTFB == 0 {
					r.stats.TTFB = time.Since(r.start)
					if r.f.metrics != nil {
						r.f.metrics.ttfb.Observe(r.stats.TTFB.Seconds())
					}
				}
				return r.st[i].data[r.pos-r.leaves[i].Offset:], r.pos, nil
			}
		}
		if r.err != nil {
			return nil, 0, r.err
		}
		if r.waitSince.IsZero() {
			r.waitSince = time.Now()
		}
		r.waitChangeLocked()
		if r.ctx.Err() != nil && !r.closed && r.err == nil {
			return nil, 0, fmt.Errorf("fetch: read %s: %w", r.t.Cid, r.ctx.Err())
		}
	}
}

// waitChangeLocked releases mu until the fetch changes (r.changed) or the
// Reader's context ends, waking the scheduler first. The caller holds mu.
func (r *Reader) waitChangeLocked() {
	ch := r.changed
	r.mu.Unlock()
	r.wake()
	select {
	case <-ch:
	case <-r.ctx.Done():
	}
	r.mu.Lock()
}

// Seek sets the position for the next Read (io.Seeker). Seeking relative
// to the end needs the size: for a file opened by CID alone it waits for
// its inner nodes, or for a single leaf, for the leaf (as
// http.ServeContent's first Seek needs). The fetch window moves with the position: leaves
// before it are no longer fetched.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, fmt.Errorf("fetch: seek %s: %w", r.t.Cid, r.closedErr)
	}
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		if err := r.waitSizeLocked(); err != nil {
			return 0, err
		}
		abs = r.size + offset
	default:
		return 0, fmt.Errorf("fetch: seek %s: bad whence %d", r.t.Cid, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("fetch: seek %s: negative position %d", r.t.Cid, abs)
	}
	r.pos = abs
	r.waitSince = time.Time{}
	r.wake()
	return abs, nil
}

// waitSizeLocked waits until the size is known (from the root's inner
// nodes, or a single leaf's arrival), the fetch fails, the Reader closes
// or its context ends. The caller holds mu, which is released while
// waiting.
func (r *Reader) waitSizeLocked() error {
	for r.size < 0 {
		switch {
		case r.closed:
			return fmt.Errorf("fetch: seek %s: %w", r.t.Cid, r.closedErr)
		case r.err != nil:
			return r.err
		case r.ctx.Err() != nil:
			return fmt.Errorf("fetch: seek %s: %w", r.t.Cid, r.ctx.Err())
		}
		r.waitChangeLocked()
	}
	return nil
}

// Size returns the content's size, or -1 while it is unknown.
func (r *Reader) Size() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.size
}

// Stats returns a copy of the fetch's accounting so far.
func (r *Reader) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	if r.stats.Peers != nil {
		s.Peers = make(map[peer.ID]int64, len(r.stats.Peers))
		for p, n := range r.stats.Peers {
			s.Peers[p] = n
		}
	}
	s.Complete = r.leaves != nil && r.fetched == len(r.leaves)
	s.OriginWastedBytes = max(s.OriginSentBytes-s.OriginBytes, 0)
	return s
}

// Close cancels everything the fetch started and waits for it to end. The
// blocks fetched stay in the store. Later calls return an error wrapping
// ErrClosed.
func (r *Reader) Close() error { return r.closeWith(ErrClosed) }

// closeWith closes r; later calls on it fail with an error wrapping why.
func (r *Reader) closeWith(why error) error {
	first := false
	r.once.Do(func() { first = true })
	if !first {
		return fmt.Errorf("fetch: close %s: %w", r.t.Cid, ErrClosed)
	}
	r.mu.Lock()
	r.closed, r.closedErr = true, why
	r.notifyLocked()
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()

	// A reader closed right after its last byte can stop the fetch before
	// it named the content in the store: every leaf is kept, so do it now
	// (local work, bounded), or the content would stay loose and unannounced.
	r.mu.Lock()
	unnamed := r.leaves != nil && r.fetched == len(r.leaves) && r.kept == len(r.leaves) && !r.stats.Stored
	r.mu.Unlock()
	if unnamed {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), finishTimeout)
		r.finish(ctx)
		cancel()
	}

	r.mu.Lock()
	r.f.log.Debug("fetch ended", "cid", r.t.Cid, "leaves", len(r.leaves), "provider", r.trace.provAtOpen,
		"crowd_open", r.trace.crowdAtOpen, "crowd_join", r.trace.crowdAtJoin, "join", r.trace.joinWhy, "join_at", r.trace.joinAt,
		"origin_leaves", r.trace.originLeaves, "peer_bytes", r.stats.PeerBytes, "origin_bytes", r.stats.OriginBytes,
		"origin_sent", r.stats.OriginSentBytes, "ttlb", r.stats.TTLB, "announced_at", r.trace.announcedAt)
	cids := r.cids
	complete := r.leaves != nil && r.fetched == len(r.leaves)
	failed := r.err != nil
	withdraw := r.advertised && !r.stats.Stored
	r.mu.Unlock()
	if withdraw {
		// Peers were told this node is fetching the content; it will not
		// hold it whole.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), finishTimeout)
		if err := r.f.cfg.Advertiser.Abandoned(ctx, r.t.Cid); err != nil {
			r.f.log.Debug("withdraw fetch", "cid", r.t.Cid, "err", err)
		}
		cancel()
	}
	if cids != nil {
		r.f.guard.unwant(cids)
	}
	f := r.f
	f.mu.Lock()
	delete(f.readers, r)
	result := "abandoned"
	switch {
	case complete:
		f.totals.Completed++
		result = "complete"
	case failed:
		f.totals.Failed++
		result = "failed"
	}
	f.mu.Unlock()
	if f.metrics != nil {
		f.metrics.fetches.WithLabelValues(result).Inc()
	}
	return nil
}

var _ io.ReadSeekCloser = (*Reader)(nil)

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
