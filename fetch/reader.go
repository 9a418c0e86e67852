package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/exchange"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

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

// findProviders asks Config.Providers who holds the root and connects to
// them, so that the bitswap session's wants reach them.
func (r *Reader) findProviders() {
	p := r.f.cfg.Providers
	if p == nil {
		r.prov = provNone
		return
	}
	ch := p.FindProvidersAsync(r.ctx, r.t.Cid, 16)
	timer := time.NewTimer(r.f.cfg.ProviderWait)
	defer timer.Stop()
	select {
	case ai, ok := <-ch:
		if !ok {
			r.prov = provNone
			return
		}
		r.prov = provSome
		r.connect(ai)
		if !r.connectReady(ch) {
			return // the finder told all it knew
		}
	case <-timer.C:
		r.prov = provNone // none known yet: the origin goes at once
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			select {
			case ai, ok := <-ch:
				if !ok {
					return
				}
				r.mu.Lock()
				r.prov = provSome
				r.mu.Unlock()
				r.connect(ai)
			case <-r.ctx.Done():
				return // a discovery that does not close its channel must not hold Close up
			}
		}
	}()
}

// connectReady connects the providers ch has ready, so that the fetch
// knows at Open every provider the finder had at hand (a provider table
// sends them all at once): whether one holds the whole content decides
// whether the fetch announces itself (earlyAnnounceLocked). It reports
// whether ch is still open.
func (r *Reader) connectReady(ch <-chan peer.AddrInfo) bool {
	for {
		select {
		case ai, ok := <-ch:
			if !ok {
				return false
			}
			r.connect(ai)
		default:
			return true
		}
	}
}

func (r *Reader) connect(ai peer.AddrInfo) {
	h := r.f.cfg.Host
	if ai.ID == h.ID() || r.f.guard.isPenalised(ai.ID) {
		return
	}
	r.learnAddrs(ai)
	r.mu.Lock()
	r.provs = append(r.provs, ai.ID)
	dial := !r.addrlessLocked(ai.ID) && r.admitDialLocked(ai.ID)
	r.mu.Unlock()
	if dial {
		r.dial(ai, true)
	}
}

// addrlessLocked reports whether p, a provider just listed, cannot be
// dialled yet: not connected, and no address known (a peer the provider
// table knows by ID only, its addresses still on their way by gossip). It
// is then noted, and dialled once its addresses arrive
// (dialAddrlessLocked). Dialled at once, it failed ("no addresses") and,
// already listed, was never dialled again: a crowd member whose fetch
// announcement came before its addresses stayed out of reach of this
// node for the whole fetch. The caller holds mu.
func (r *Reader) addrlessLocked(p peer.ID) bool {
	h := r.f.cfg.Host
	if h.Network().Connectedness(p) == network.Connected || len(h.Peerstore().Addrs(p)) > 0 {
		return false
	}
	if len(r.addrless) == 0 {
		r.addrlessSince = time.Now()
	}
	r.addrless = append(r.addrless, p)
	r.addrlessAt, r.addrlessGap = time.Time{}, 0 // look soon again
	return true
}

// dialAddrlessLocked dials the providers addrlessLocked noted whose
// addresses have arrived and forgets those connected meanwhile (they
// dialled this node) or penalised. Nothing says when addresses arrive, so
// while any are left it looks again at the times addrlessPoll gives: soon
// after one is noted, less often the longer it waits (a peer reachable
// only through a relay may never have an address to dial). The caller
// holds mu.
func (r *Reader) dialAddrlessLocked(p *plan, now time.Time, s *soon) {
	if len(r.addrless) == 0 {
		return
	}
	if now.Before(r.addrlessAt) {
		s.at(r.addrlessAt)
		return
	}
	h := r.f.cfg.Host
	r.addrless = slices.DeleteFunc(r.addrless, func(id peer.ID) bool {
		if r.settled(id) {
			return true
		}
		ai := h.Peerstore().PeerInfo(id)
		if len(ai.Addrs) == 0 {
			return false
		}
		if r.admitDialLocked(id) {
			p.connect = append(p.connect, ai)
		}
		return true
	})
	if len(r.addrless) > 0 {
		r.addrlessGap = addrlessPoll(r.addrlessGap, now.Sub(r.addrlessSince))
		r.addrlessAt = now.Add(r.addrlessGap)
		s.at(r.addrlessAt)
	}
}

// learnAddrs puts a provider's addresses in the peerstore before the
// provider is listed in r.provs, where the scheduler may pick it at once:
// a want sent to it (the first want, firstwant.go) dials it with what the
// peerstore holds. Left to dial's Connect, in its own goroutine, the want
// could go first and fail ("no addresses"), the provider never asked for
// the block and so never owing an answer (found by
// TestSilentProviderAskedLate on a loaded machine).
func (r *Reader) learnAddrs(ai peer.AddrInfo) {
	if len(ai.Addrs) > 0 {
		r.f.cfg.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
	}
}

// dial connects to a peer in the background, for the fetch's life;
// counted: the dial counts against Config.PeerBudget until it ends
// (admitDialLocked).
func (r *Reader) dial(ai peer.AddrInfo, counted bool) {
	h := r.f.cfg.Host
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := h.Connect(r.ctx, ai); err != nil {
			r.f.log.Debug("connect to provider", "peer", ai.ID, "err", err)
		}
		if counted {
			r.mu.Lock()
			r.countDialsLocked(-1)
			r.mu.Unlock()
		}
	}()
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

// plan is what one pass of schedule decided, carried out once the lock is
// released.
type plan struct {
	leaves               []store.Leaf
	cur                  int
	local, peer, origin  []int // leaves to start requests for
	localQ, peerQ, origQ []*req
	batch                *peerBatch
	connect              []peer.AddrInfo // crowd members to connect to
	silent               []peer.ID       // providers to penalise for silence
	advertise, finish    bool
	refresh              bool // look the providers up again (refresh.go)
	// missing and peerWaiting are windowLocked's answer; join the state
	// the origin's rules decide on, built once a pass (joinLocked).
	missing, peerWaiting bool
	join                 *joinState
}

// schedule starts and cancels requests for the leaves around the position,
// as the policy (policy.go) says. It returns when it wants to run again at
// the latest (a hedging or stall deadline), and true when the fetch has
// ended.
func (r *Reader) schedule() (next time.Time, done bool) {
	cfg := &r.f.cfg
	r.mu.Lock()
	if r.closed || r.err != nil {
		r.mu.Unlock()
		return time.Time{}, true
	}
	now := time.Now()
	s := newSoon(now)
	cur := r.curLeaf()
	end := min(len(r.leaves), cur+r.aheadLocked())
	r.dropOutsideLocked(cur, end)
	p := &plan{leaves: r.leaves, cur: cur}
	p.missing, p.peerWaiting = r.windowLocked(cur, end)
	r.joinOriginLocked(p, now, s)
	// A stuck leaf is asked again before anything is planned: requests
	// planned and then dropped would be recorded as under way and never
	// started.
	if r.stuckLocked(cur, end, now, s) {
		r.mu.Unlock()
		r.wake()
		return now, false
	}
	r.peerHedgeLocked(cur, now, s)
	r.judgeMembersLocked(now, s)
	r.stripeLocked(p, now, s)
	r.dialAddrlessLocked(p, now, s)
	r.dialSpareLocked(p)
	p.refresh = r.refreshDueLocked(now, p.peerWaiting, s)
	r.reaskLocked(cur, end, now, s)
	r.planLocked(p, cur, end, now, s)
	if err := r.giveUpLocked(p.missing, now, s); err != nil {
		r.countDialsLocked(-len(p.connect)) // not dialled
		r.mu.Unlock()
		r.fail(err)
		return time.Time{}, true
	}
	p.silent = r.silentLocked(now, s)
	n := len(r.leaves)
	// A fetch tells the mesh it is under way, so that peers wanting the
	// same content get its leaves from here as they arrive and, striping,
	// leave its share to this node: a cold fetch, and a striping one, when
	// its origin requests start; a striping fetch that knows of no holder
	// of the whole content as soon as it asks peers, as it may be the
	// first of a crowd that starts together: the others have then heard of
	// it by the time the origin joins (PeerTimeout later) and split the
	// leaves with it. One that knows of others fetching announces itself
	// too (earlyAnnounce).
	p.advertise = !r.advertised && cfg.Advertiser != nil && r.fetched < n &&
		(len(p.origin) > 0 && (r.prov == provNone || r.striping()) || len(p.peer) > 0 && r.earlyAnnounceLocked())
	if p.advertise {
		r.advertised, r.announcedAt = true, now
		r.trace.announcedAt = now.Sub(r.start)
		s.at(now.Add(cfg.PeerTimeout)) // heard: this node joins its stripe
	}
	p.finish = r.fetched == n && r.kept == n && !r.finishing
	if p.finish {
		r.finishing = true
	}
	r.mu.Unlock()
	r.carryOut(p)
	return s.next, false
}

// dropOutsideLocked forgets the bytes of leaves behind the reader and
// cancels requests outside the window [cur, end). The caller holds mu.
func (r *Reader) dropOutsideLocked(cur, end int) {
	for i := range r.st {
		if i >= cur && i < end {
			continue
		}
		s := &r.st[i]
		if i < cur && s.data != nil {
			s.data = nil
			s.localTried = false
		}
		s.since = time.Time{}
		r.cancelLocked(s)
	}
}

// cancelLocked cancels and forgets every request for a leaf. The caller
// holds mu.
func (r *Reader) cancelLocked(s *leafState) {
	for _, q := range []**req{&s.local, &s.peer, &s.origin} {
		if *q != nil {
			(*q).cancel()
			if q == &s.origin {
				r.originBusy--
			}
			*q = nil
		}
	}
}

// windowLocked reports whether a leaf in [cur, end) is missing, and
// whether one of those is asked of peers. The caller holds mu.
func (r *Reader) windowLocked(cur, end int) (missing, peerWaiting bool) {
	for i := cur; i < end; i++ {
		if r.st[i].data == nil {
			missing = true
			if r.st[i].peer != nil {
				peerWaiting = true
			}
		}
	}
	return missing, peerWaiting
}

// joinOriginLocked lets the origin join when the policy says so
// (originJoins), as a hedge of the leaf the reader waits on if a holder
// serves the fetch (hedgesOnly), lets a hedging origin take every leaf it
// may once the peers have stalled (takesOver) or no holder serves any
// longer, and has it hedge again once they deliver (hedgesAgain). The
// caller holds mu.
func (r *Reader) joinOriginLocked(p *plan, now time.Time, s *soon) {
	if !r.t.hasOrigin() || r.originOn && !r.originHedge && r.tookOver.IsZero() {
		return
	}
	j := r.joinLocked(p, now, s)
	if r.originOn {
		switch {
		case r.originHedge && (takesOver(j, s) || !j.serving):
			r.originHedge, r.tookOver = false, now
			r.f.log.Debug("origin takes over from hedging", "cid", r.t.Cid, "dur", now.Sub(r.start), "serving", j.serving)
		case !r.originHedge && hedgesAgain(j, r.tookOver):
			r.originHedge, r.tookOver = true, time.Time{}
			r.f.log.Debug("origin hedges again", "cid", r.t.Cid, "dur", now.Sub(r.start))
		}
		return
	}
	join, why := originJoins(j, s)
	if !join {
		return
	}
	hedge := hedgesOnly(why, j.serving)
	r.originOn, r.originHedge, r.originSince = true, hedge, now
	r.trace.joinWhy, r.trace.joinAt = why, now.Sub(r.start)
	if r.trace.on && r.f.cfg.Crowd != nil {
		r.trace.crowdAtJoin = len(r.f.cfg.Crowd.Fetchers(r.t.Cid))
	}
	if r.prov != provNone {
		r.stats.Hedged = true
	}
	r.f.log.Debug("origin joins", "cid", r.t.Cid, "dur", now.Sub(r.start), "why", why, "hedge", hedge)
}

// joinLocked returns the pass's join state, gathered the first time a rule
// asks (joinStateLocked), which notes in s when it changes. The caller
// holds mu.
func (r *Reader) joinLocked(p *plan, now time.Time, s *soon) joinState {
	if p.join == nil {
		j := r.joinStateLocked(now, p.missing, p.peerWaiting, s)
		p.join = &j
	}
	return *p.join
}

// joinStateLocked gathers what originJoins decides on, and notes in s when
// a leaf will count as skipped (skippedLocked). The caller holds mu.
func (r *Reader) joinStateLocked(now time.Time, missing, peerWaiting bool, s *soon) joinState {
	var fetching []peer.ID
	if r.f.cfg.Crowd != nil {
		fetching = r.f.cfg.Crowd.Fetchers(r.t.Cid)
	}
	fetchers := len(fetching)
	for _, p := range fetching {
		if r.sawFetching == nil {
			r.sawFetching = make(map[peer.ID]struct{})
		}
		r.sawFetching[p] = struct{}{}
	}
	serving := r.holderDeliveringLocked(now, fetching)
	return joinState{
		now: now, start: r.start, lastPeer: r.lastPeer, waitSince: r.waitSince,
		peerTimeout: r.f.cfg.PeerTimeout, missing: missing, peerWaiting: peerWaiting,
		noProvider: r.prov == provNone, provsPenalised: r.allProvidersPenalised(),
		peerDelivered: r.stats.PeerBytes > 0,
		peersSlow:     !r.waitSince.IsZero() && slowerThanOrigin(r.peerTimes, r.f.originShare(fetchers)),
		held:          serving || r.firstMissingHeldLocked(), serving: serving, crowd: fetchers > 0, skipped: r.skippedLocked(),
		refused: fetchers == 0 && r.waitedRefusedLocked(), // (only asked for when no crowd is known)
		leaf:    leafTime(r.f.originRequestRate()),
		pace:    peerPace(r.peerTimes), stallTimeout: r.f.cfg.StallTimeout,
	}
}

// skippedLocked reports whether a peer skipped the leaf the reader waits
// on: the holder it was asked of directly, at the top priority
// (peerHedgeLocked), has since sent more than skipAfter later leaves of
// the window (fetched, never asked of the origin), more than it can have
// had under way when asked, so it has dropped the leaf (a damaged block,
// TestFaultSeedDamage; one that answers the direct want with DONT_HAVE is
// caught sooner, waitedRefusedLocked). Later leaves sent by a peer asked
// for the reader's leaf only in the session's order are no sign: a holder
// serves each peer's wants by the priorities they had when asked, and a
// leaf asked far ahead of the reader waits behind leaves asked later
// nearer it. Counted as skipped (until 2026-12-04), they had the default
// demo's apps take leaves from the origin after 200 ms waits while the
// seed sent the leaves around them. The caller holds mu.
func (r *Reader) skippedLocked() bool {
	cur, waiting := r.waitingLeafLocked()
	if !waiting {
		return false
	}
	w := &r.st[cur]
	if w.hedgedTo == "" {
		return false
	}
	n := 0
	end := min(len(r.leaves), cur+r.f.windowLeaves())
	for k := cur + 1; k < end; k++ {
		st := &r.st[k]
		if st.fetched && st.originAt.IsZero() && st.from == w.hedgedTo && st.fetchedAt.After(w.hedgedAt) {
			n++
		}
	}
	return n > skipAfter
}

// waitedRefusedLocked reports whether the reader waits on a leaf that the
// peers asked said they do not have and none said they have
// (guard.refusers), one of them at least a peer this read never saw
// fetching the content: a crowd member says DONT_HAVE of a leaf it has
// yet to fetch, and is not asked again when, done, it moves from the
// fetchers to the holders (a fetch beside one such member took 5 leaves
// from the origin as it did, cut off as the member's copies came). The
// caller holds mu. Every provider of this fetch that can still answer
// (connected, not penalised) must be among them: the first want asks one
// provider directly, and its DONT_HAVE can come before bitswap's session
// has sent its want-haves to the others (they were not "asked" yet).
func (r *Reader) waitedRefusedLocked() bool {
	cur, waiting := r.waitingLeafLocked()
	if !waiting || r.waitSince.IsZero() {
		return false
	}
	refs := r.f.guard.refusers(r.leaves[cur].Cid)
	if !slices.ContainsFunc(refs, func(p peer.ID) bool {
		_, fetched := r.sawFetching[p]
		return !fetched
	}) {
		return false
	}
	return !slices.ContainsFunc(r.provs, func(p peer.ID) bool {
		return !slices.Contains(refs, p) && r.f.guard.mayAnswer(p)
	})
}

// endWaitLocked ends the reader's wait on a leaf (if it waited), adding
// the time it waited with the origin on to waitedDry while no peer has
// delivered any of the content. The caller holds mu.
func (r *Reader) endWaitLocked() {
	if !r.waitSince.IsZero() && r.originOn && r.stats.PeerBytes == 0 {
		r.waitedDry += max(time.Since(later(r.waitSince, r.originSince)), 0)
	}
	r.waitSince = time.Time{}
}

// waitingLeafLocked returns the leaf at the position and whether it has
// yet to arrive (false past the end). The caller holds mu.
func (r *Reader) waitingLeafLocked() (int, bool) {
	cur := r.curLeaf()
	return cur, cur < len(r.leaves) && r.st[cur].data == nil
}

// originShare is the origin's rate a fetch may count on, in bytes per
// second (0: not measured): the Fetcher's measure of its capacity, shared
// with fetchers others known to fetch the same content (Config.Crowd),
// who ask the same origin. Peers serving a crowd are slower for each of
// its nodes than an idle origin, and so is the origin once the whole crowd
// asks it.
func (f *Fetcher) originShare(fetchers int) float64 {
	return f.originCapacity() / float64(1+fetchers)
}

// firstMissingHeldLocked reports whether a peer has said HAVE of the
// first leaf from the position that has not arrived. The caller holds mu.
func (r *Reader) firstMissingHeldLocked() bool {
	for i := r.curLeaf(); i < len(r.leaves); i++ {
		if r.st[i].data == nil {
			return r.f.guard.held(r.leaves[i].Cid)
		}
	}
	return false
}

// holderDeliveringLocked reports whether a provider of this content that
// holds it (not one of the crowd still fetching it) has sent this Fetcher
// a wanted block or a HAVE within StallTimeout: it is up and serving,
// only busy; fetching is the crowd fetching it (Config.Crowd). The
// caller holds mu.
func (r *Reader) holderDeliveringLocked(now time.Time, fetching []peer.ID) bool {
	for _, p := range r.provs {
		if !slices.Contains(fetching, p) && !r.f.guard.isPenalised(p) && r.f.guard.usefulSince(p, now.Add(-r.f.cfg.StallTimeout)) {
			return true
		}
	}
	return false
}

// planLocked decides the requests to start for the leaves in [cur, end):
// the store first, then peers, and the origin once it has joined, for the
// leaves the stripe leaves to this node or that are overdue. The first
// origin request goes alone, so that the first leaf comes as fast as a
// plain request would bring it; then OriginConcurrency. The caller holds
// mu.
func (r *Reader) planLocked(p *plan, cur, end int, now time.Time, s *soon) {
	cfg := &r.f.cfg
	originLimit := cfg.OriginConcurrency
	if r.stats.OriginBytes == 0 {
		originLimit = 1
	}
	leaf := r.leafTimeLocked(cur, end, now)
	window := r.f.windowLeaves()
	for i := cur; i < end; i++ {
		st := &r.st[i]
		if st.data != nil || st.local != nil {
			continue
		}
		if !st.localTried {
			if !st.inStore {
				st.inStore, _ = cfg.Store.Has(r.ctx, r.leaves[i].Cid)
			}
			if st.inStore && i >= cur+r.readAheadLocalLocked(i, window) {
				continue // read from the store when the reader nears it
			}
			st.localTried = true
			if st.inStore {
				st.local = r.newReq()
				p.local, p.localQ = append(p.local, i), append(p.localQ, st.local)
				continue
			}
		}
		if st.peer == nil {
			// One batch for the leaves that entered the window together;
			// the guard gives their wants priorities in file order, so
			// the peer sends the leaf the reader needs first.
			if p.batch == nil {
				p.batch = r.newBatch()
			}
			st.peer, st.peerAt = p.batch.newReq(), now
			if st.since.IsZero() {
				st.since = now
			}
			p.peer, p.peerQ = append(p.peer, i), append(p.peerQ, st.peer)
		}
		if r.originOn && r.originDead == nil && st.origin == nil && r.originBusy < originLimit {
			mine, why := r.mineLocked(p, i, now, leaf, s)
			if !mine {
				continue
			}
			if r.trace.originLeaves == nil {
				r.trace.originLeaves = make(map[string]int)
			}
			r.trace.originLeaves[why]++
			st.origin, st.originAt = r.newReq(), now
			r.originBusy++
			p.origin, p.origQ = append(p.origin, i), append(p.origQ, st.origin)
		}
	}
}

// readAheadLocalLocked is how far ahead of the reader leaf i, in the
// store, is read from it: a leaf fetched and let go of (spareKeptLocked)
// within Fetcher.readBackLeaves, one the store held before the fetch
// within the window (read, it counts as fetched). The caller holds mu.
func (r *Reader) readAheadLocalLocked(i, window int) int {
	if r.st[i].dropped {
		return r.f.readBackLeaves()
	}
	return window
}

// leafTimeLocked is how long the origin is taken to need for one leaf:
// what this Fetcher's origin requests have given (leafTime), or if longer
// how long its oldest origin request in the window has been running
// (others asking the same origin wait as long). The caller holds mu.
func (r *Reader) leafTimeLocked(cur, end int, now time.Time) time.Duration {
	leaf := leafTime(r.f.originRequestRate())
	for i := cur; i < end; i++ {
		if st := &r.st[i]; st.origin != nil && !st.originAt.IsZero() {
			leaf = max(leaf, now.Sub(st.originAt))
		}
	}
	return leaf
}

// stuckLocked asks a leaf the reader has waited on for stuckAfter while it
// was asked of peers again on a new session: bitswap's session can be
// left with nobody to ask (the peer it asked was caught lying, and the
// others were never asked about that block) and, its own search being
// off, never asks again. The new session's want-block for it can go to
// the same slow holder (sessions pick among the peers that said HAVE at
// random until one has delivered): so the holder of the leaf that was not
// asked for it and last delivered a block (promises.liveHolder) is asked
// for it directly too, as a fetch's first leaf is (firstwant.go). A fetch
// with a provider sending 100 KiB/s and one found late failed one time in
// 20 after StallTimeout (TestLateProviderAsked). It reports whether it
// asked again. The caller holds mu.
func (r *Reader) stuckLocked(cur, end int, now time.Time, s *soon) bool {
	if r.waitSince.IsZero() || cur >= len(r.leaves) || r.st[cur].peer == nil {
		return false
	}
	since := later(r.waitSince, r.sessSince)
	if now.Sub(since) < stuckAfter {
		s.at(since.Add(stuckAfter))
		return false
	}
	other := r.f.guard.otherHolder(r.leaves[cur].Cid) // before the wants asked are cancelled
	r.askAgainLocked(now, cur, end, true, func(int) bool { return true })
	r.retarget, r.retargetLeaf = other, cur
	r.f.log.Debug("leaf asked again on a new session", "cid", r.leaves[cur].Cid, "direct", r.retarget)
	return true
}

// peerHedgeLocked asks the leaf the reader waits on, once, directly of
// the holder serving this fetch (servingHolderLocked) at the top priority
// once the reader has waited on it for PeerTimeout since it was asked
// (peerHedges): its peer request is set aside, and planLocked asks it
// again in a batch whose first want goes to that holder (askFirst).
// Bitswap's session gives each want-block to one of the peers that said
// HAVE: in the default demo (a seed, 20 apps) most of the leaves the
// apps took from the origin had been asked only of apps at their serving
// caps, while the seed sent the leaves around them. The caller holds mu.
func (r *Reader) peerHedgeLocked(cur int, now time.Time, s *soon) {
	if cur >= len(r.st) {
		return
	}
	st := &r.st[cur]
	if st.data != nil || st.peer == nil || st.hedgedTo != "" ||
		!peerHedges(now, r.waitSince, st.peerAt, r.f.cfg.PeerTimeout, s) {
		return
	}
	h := r.servingHolderLocked(now, r.leaves[cur].Cid)
	if h == "" {
		return
	}
	st.hedgedTo, st.hedgedAt = h, now
	st.peer.moved.Store(true)
	st.peer.again.Store(true)
	r.f.guard.move(r.leaves[cur].Cid) // before the cancel bitswap sends
	st.peer.cancel()
	st.peer = nil
	r.retarget, r.retargetLeaf = h, cur
	r.f.log.Debug("leaf asked of a serving holder", "cid", r.leaves[cur].Cid, "holder", h)
}

// servingHolderLocked returns the provider of this content that holds it
// (not one of the crowd still fetching it), connected and not penalised,
// that has said HAVE of c or was asked for it (guard.claims: a provider
// holding part of the content only would answer DONT_HAVE, which can
// bring the origin in at once), and that sent this fetch the most leaves
// within StallTimeout (of those, the one that sent the last); "" if none.
// Asked for c already, it is asked again at the top priority: a holder
// serves each peer's wants by the priority each had when asked, and a
// leaf asked far ahead of the reader can wait behind leaves asked later.
// Counting leaves, not taking the last to deliver, picks the seed serving
// this node over a crowd member at its serving cap that has just
// finished.
//
// When none of them has sent this fetch a leaf (a one-leaf file, or the
// first leaf), it is the one that has delivered this node the most blocks,
// one of them within StallTimeout (guard.deliveries): the default demo's
// apps took photos from the origin after 1.2 s though the seed that had
// served them for seconds held them, their first want having gone to an
// app at its serving cap. The caller holds mu.
func (r *Reader) servingHolderLocked(now time.Time, c cid.Cid) peer.ID {
	var fetching []peer.ID
	if r.f.cfg.Crowd != nil {
		fetching = r.f.cfg.Crowd.Fetchers(r.t.Cid)
	}
	h := r.f.cfg.Host
	ok := func(p peer.ID) bool {
		return p != h.ID() && !slices.Contains(fetching, p) && !r.f.guard.isPenalised(p) &&
			h.Network().Connectedness(p) == network.Connected && r.f.guard.claims(p, c)
	}
	by := r.leavesSentLocked(now)
	var best peer.ID
	for _, p := range r.provs {
		x, sent := by[p]
		if !sent || !ok(p) {
			continue
		}
		if b := by[best]; best == "" || x.n > b.n || x.n == b.n && x.last.After(b.last) {
			best = p
		}
	}
	if best != "" {
		return best
	}
	most := 0
	for _, p := range r.provs {
		if n := r.f.guard.deliveries(p, now.Add(-r.f.cfg.StallTimeout)); n > most && ok(p) {
			best, most = p, n
		}
	}
	return best
}

// leavesSent is how many leaves a peer sent a fetch, and when the last.
type leavesSent struct {
	n    int
	last time.Time
}

// leavesSentLocked counts the leaves each peer sent this fetch within
// StallTimeout. The caller holds mu.
func (r *Reader) leavesSentLocked(now time.Time) map[peer.ID]leavesSent {
	by := map[peer.ID]leavesSent{}
	for i := range r.st {
		st := &r.st[i]
		if st.from == "" || now.Sub(st.fetchedAt) > r.f.cfg.StallTimeout {
			continue
		}
		x := by[st.from]
		x.n++
		x.last = later(x.last, st.fetchedAt)
		by[st.from] = x
	}
	return by
}

// askAgainLocked cancels the peer requests of the missing leaves in
// [from, to) that pick selects and, if there were any, starts a new
// bitswap session, on which schedule asks them again (a new session's
// want-haves reach every connected peer). With keep, bitswap's cancels of
// their wants at the peers asked are kept back (guard.move): the reader
// waits on them, and a holder that took one off its queue still sends it.
// (Kept back for every leaf asked again, the stripe's re-asks of leaves no
// peer had said HAVE of left holders sending blocks for old wants: the
// demo's 50-app flash crowd took 63-118 s, median 87, against 52-69.) It
// returns how many it cancelled. The caller holds mu.
func (r *Reader) askAgainLocked(now time.Time, from, to int, keep bool, pick func(i int) bool) int {
	var again []int
	for i := from; i < to; i++ {
		if st := &r.st[i]; st.peer != nil && st.data == nil && pick(i) {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return 0
	}
	if keep {
		cs := make([]cid.Cid, len(again))
		for k, i := range again {
			cs[k] = r.leaves[i].Cid
		}
		r.f.guard.move(cs...) // before the cancels bitswap sends
	}
	for _, i := range again {
		r.st[i].peer.again.Store(keep)
		r.st[i].peer.cancel()
		r.st[i].peer = nil
	}
	r.leafSess, r.sessSince = r.f.bs.NewSession(r.ctx), now
	return len(again)
}

// giveUpLocked returns the fetch's error when nothing can come: at once if
// the origin failed and no peer is known to have the content or has sent
// any of it, else after StallTimeout with nothing delivered. The caller
// holds mu.
func (r *Reader) giveUpLocked(missing bool, now time.Time, s *soon) error {
	cfg := &r.f.cfg
	if !missing {
		return nil
	}
	s.at(r.lastBlock.Add(cfg.StallTimeout))
	if r.t.hasOrigin() && r.originDead == nil {
		return nil
	}
	stalled := now.Sub(r.lastBlock) >= cfg.StallTimeout
	if !stalled && (r.originDead == nil || !r.noPeerHope()) {
		return nil
	}
	cause := r.originDead
	if cause == nil {
		cause = errors.New("no origin")
	}
	if !stalled {
		return fmt.Errorf("%w: %s: the origin failed and no peer has it: %w", ErrUnavailable, r.t.Cid, cause)
	}
	// The time it was, not StallTimeout: with an origin, the fetch gives
	// up only once the origin failed too (a hung one after its timeout).
	return fmt.Errorf("%w: %s: no block from any source for %v; origin: %w", ErrUnavailable, r.t.Cid, now.Sub(r.lastBlock).Round(time.Millisecond), cause)
}

// silentLocked returns the providers (and crowd members) to penalise: those
// that, in StallTimeout from the start, sent nothing for the content while
// connected, though asked for an answer at least PeerTimeout before (a want
// that says send DONT_HAVE: the fetch's first want-block, bitswap's wants to
// its session's peers). A provider that answered DONT_HAVE said something: it
// was listed for content it does not hold (a seed asked before its summary
// came, a holder that evicted it) and is honest; one that was only sent
// bitswap's broadcast want-haves, which ask for no answer, owes none. A member
// of the crowd fetching the content must deliver its share whatever it was
// asked: a DONT_HAVE does not excuse it, unless the origin failed (it had
// nothing to send either). A member the stripe gives no leaf has no share: it
// can send only what it took from others, and is judged as any provider is
// (the demo's 50-app flash crowd penalised about ten members per app for 30 s
// at the 3-leaf hero image, the 47 that owned none of its leaves, and then
// could not take the video from them). They are judged once; a provider first
// asked for an answer less than PeerTimeout before (its want went out late: a
// slow dial, a loaded machine) is judged when it has owed the answer that
// long, and one not yet connected (not a crowd member) or asked (the dial or
// the want still on its way) is looked at again PeerTimeout later. The caller
// holds mu.
func (r *Reader) silentLocked(now time.Time, s *soon) []peer.ID {
	if r.provsDone || len(r.provs) == 0 {
		return nil
	}
	if now.Sub(r.start) < r.f.cfg.StallTimeout {
		s.at(r.start.Add(r.f.cfg.StallTimeout))
		return nil
	}
	r.provsDone = true
	var fetching []peer.ID
	if r.f.cfg.Crowd != nil {
		fetching = r.f.cfg.Crowd.Fetchers(r.t.Cid)
	}
	g, pt := r.f.guard, r.f.cfg.PeerTimeout
	again := r.start.Add(r.f.cfg.StallTimeout + pt) // when a provider not yet asked is looked at again
	early := now.Before(again)
	var silent []peer.ID
	for _, p := range r.provs {
		member := slices.Contains(fetching, p) && r.ownsLocked(p)
		linked := g.linkedSince(p, r.start)
		quiet := !g.answeredSince(p, r.start) // said nothing this fetch
		switch {
		case g.usefulSince(p, r.start), g.isPenalised(p):
		case !linked && early && !member && !g.cutSince(p, r.start):
			// Not connected yet: the dial may be under way. (A crowd member
			// is judged on what it delivered, not on an answer it owes:
			// one not connected by StallTimeout is not judged here; see
			// unproven.go for members known only by gossip.)
			r.provsDone = false
			s.at(again)
		case !linked:
		case member && r.originDead != nil:
		case member, quiet && g.owesAnswer(p, now.Add(-pt)):
			silent = append(silent, p)
		case quiet && g.owesAnswer(p, now):
			r.provsDone = false // asked late: judged once it has owed for PeerTimeout
			s.at(now.Add(pt - g.owedFor(p, now)))
		case quiet && early:
			r.provsDone = false // not asked yet: the want may be on its way
			s.at(again)
		}
	}
	return silent
}

// ownsLocked reports whether the stripe gives p a leaf of this fetch to
// take from the origin. The caller holds mu.
func (r *Reader) ownsLocked(p peer.ID) bool {
	if r.stripe == nil {
		return false
	}
	for i := range r.leaves {
		if r.stripe.owner(i) == p {
			return true
		}
	}
	return false
}

// carryOut starts what schedule planned, without the lock.
func (r *Reader) carryOut(p *plan) {
	f := r.f
	for k, i := range p.local {
		r.goLocal(i, p.leaves[i], p.localQ[k])
	}
	if len(p.peer) > 0 {
		r.goPeers(p.peer, p.cur, p.leaves, p.peerQ, p.batch)
	}
	for k, i := range p.origin {
		r.goOrigin(i, p.leaves[i], p.origQ[k])
	}
	for _, ai := range p.connect {
		r.dial(ai, true)
	}
	if p.refresh {
		r.wg.Add(1)
		go r.refreshProviders()
	}
	if p.advertise {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := f.cfg.Advertiser.Fetching(r.ctx, r.t.Cid); err != nil && r.ctx.Err() == nil {
				f.log.Debug("advertise fetch", "cid", r.t.Cid, "err", err)
			}
		}()
	}
	for _, id := range p.silent {
		if f.guard.penaliseMissing(id, min(f.cfg.Penalty, silentPenalty)) {
			f.countPenalty()
			f.log.Info("silent provider penalised", "peer", id, "cid", r.t.Cid, "owedFor", f.guard.owedFor(id, time.Now()))
		}
	}
	if p.finish {
		r.finish(r.ctx)
	}
}

// earlyAnnounceLocked reports whether a fetch announces itself when it
// first asks peers, before any origin request: when it stripes and no
// provider it knows holds the whole content (every one known is of the
// crowd fetching it). Others fetching the same content then connect to it
// and ask it for the leaves it gets. Announced only once it took from the
// origin, most of a crowd was known to nobody: in the demo site's 50-app
// flash crowd a video fetch knew a median of 3 others when the origin
// joined, each app was connected to the 3-5 peers it first dialled, and
// the first apps served most of the crowd at their serving caps (7 of 50
// served 200-250 MiB each; 11 served nothing) while the origin sent 8-10
// copies. A fetch beside a holder (a seed) leaves the content to it. The
// caller holds mu.
func (r *Reader) earlyAnnounceLocked() bool {
	if !r.striping() {
		return false
	}
	fetching := r.f.cfg.Crowd.Fetchers(r.t.Cid)
	return !slices.ContainsFunc(r.provs, func(p peer.ID) bool {
		return !slices.Contains(fetching, p) && !r.f.guard.isPenalised(p)
	})
}

// striping reports whether this fetch splits its origin leaves with a
// crowd (Config.Crowd set, Config.NoStriping not).
func (r *Reader) striping() bool { return r.f.cfg.Crowd != nil && !r.f.cfg.NoStriping }

// stripeLocked brings the stripe up to date with the crowd fetching the
// root: members are the crowd and this node, penalised peers and, after
// StallTimeout, those with no sign of life left out (unproven.go).
// Members not yet known as providers are connected (so bitswap asks them)
// and judged for silence like providers. The caller holds mu.
func (r *Reader) stripeLocked(p *plan, now time.Time, s *soon) {
	if !r.striping() {
		return
	}
	self := r.f.cfg.Host.ID()
	in := heard(r.f.cfg.Advertiser != nil, r.announcedAt, now, r.f.cfg.PeerTimeout, s)
	st := makeStripe(r.t.Cid, self, r.f.cfg.Crowd.Fetchers(r.t.Cid), r.memberOutLocked, in)
	if fs, ok := r.f.cfg.Crowd.(FetchStarts); ok {
		st.withLead(headStart(r.startsLocked(fs, st, now), leafTime(r.f.originRequestRate()), r.f.cfg.OriginConcurrency))
	}
	r.holderKnown, r.holderNear = r.holderKnownLocked()
	r.borne = r.borne || r.borneLocked(st)
	if r.stripe == nil || !r.stripe.same(st) {
		met := r.stripe != nil && slices.Equal(r.stripe.members, st.members)
		r.stripe = st
		if !met {
			r.meetMembersLocked(p)
		}
	}
}

// startsLocked returns when the stripe's members and this node began to
// fetch the root, as far as this node knows: this node at its start, a
// member when this node heard its FETCH (fs, asked once a pass), now if it
// did not. The caller holds mu.
func (r *Reader) startsLocked(fs FetchStarts, st *stripe, now time.Time) []fetchStart {
	self := r.f.cfg.Host.ID()
	heard := fs.FetchStarts(r.t.Cid)
	starts := []fetchStart{{p: self, at: r.start, member: slices.Contains(st.members, self)}}
	for _, m := range st.members {
		if m == self {
			continue
		}
		at, ok := heard[m]
		if !ok {
			at = now
		}
		starts = append(starts, fetchStart{p: m, at: at, member: true})
	}
	return starts
}

// holderKnownLocked reports whether the crowd, if it tells holders
// (Holders), knows a peer other than this node that holds the content
// whole and is not penalised (known), and one this node is connected to
// (near). The caller holds mu.
func (r *Reader) holderKnownLocked() (known, near bool) {
	hs, ok := r.f.cfg.Crowd.(Holders)
	if !ok {
		return false, false
	}
	self, nw := r.f.cfg.Host.ID(), r.f.cfg.Host.Network()
	for _, q := range hs.Holders(r.t.Cid, holdersAsked) {
		if q == self || r.f.guard.isPenalised(q) {
			continue
		}
		known = true
		if nw.Connectedness(q) == network.Connected {
			return true, true
		}
	}
	return known, false
}

// borneLocked reports whether a peer that is not a member of st has
// delivered a leaf of the window: the content reaches this node from
// beyond the stripe, as it does from a holder it is not connected to
// through the peers between them, and not only as the members' shares.
// Only the window is looked at (a pass runs after each delivery, and the
// answer is kept once true: Reader.borne), so that a pass costs no more on
// a long file. The caller holds mu.
func (r *Reader) borneLocked(st *stripe) bool {
	cur := r.curLeaf()
	for i := max(cur-1, 0); i < min(len(r.st), cur+r.f.cfg.ReadAhead); i++ {
		if q := r.st[i].from; q != "" && !slices.Contains(st.members, q) {
			return true
		}
	}
	return false
}

// holdersAsked is how many holders holderKnownLocked asks the crowd for.
const holdersAsked = 8

// meetMembersLocked makes the stripe's members that are not providers yet
// providers, connecting them. A member this node cannot dial yet (known by
// ID only: its fetch announcement came by gossip before its addresses) is
// dialled once its addresses arrive (addrlessLocked). The caller holds mu.
func (r *Reader) meetMembersLocked(p *plan) {
	h := r.f.cfg.Host
	for _, m := range r.stripe.members {
		if m == h.ID() || slices.Contains(r.provs, m) {
			continue
		}
		r.provs = append(r.provs, m)
		if r.addrlessLocked(m) {
			continue
		}
		if ai := h.Peerstore().PeerInfo(m); len(ai.Addrs) > 0 && r.admitDialLocked(m) {
			p.connect = append(p.connect, ai)
		}
	}
}

// reaskLocked asks peers again, on a new bitswap session, for the leaves
// other stripe members own that no peer has said HAVE of since they were
// last asked (reask, policy.go): a peer that answered DONT_HAVE because
// it had not yet fetched its share is not reliably heard from when it has
// it. The caller holds mu.
func (r *Reader) reaskLocked(cur, end int, now time.Time, s *soon) {
	if r.stripe == nil || r.stripe.alone() {
		return
	}
	every := max(r.f.cfg.PeerTimeout, leafTime(r.f.originRequestRate()))
	self := r.f.cfg.Host.ID()
	n := r.askAgainLocked(now, cur, end, false, func(i int) bool {
		return r.stripe.owner(i) != self &&
			reask(r.st[i].peerAt, r.reaskAt, now, every, r.f.guard.held(r.leaves[i].Cid), s)
	})
	if n == 0 {
		return
	}
	r.reaskAt = now.Add(every)
	r.f.log.Debug("leaves asked again", "cid", r.t.Cid, "leaves", n)
}

// mineLocked reports whether leaf i may be asked of the origin, and why:
// always without a stripe; striping, when the stripe gives it to this node
// or the leaf is overdue from its owner (policy.go: overdue); and while the
// origin hedges per leaf (a holder serves the fetch), only if besides it
// is the leaf the reader waits on and hedgeLeaf says so. The caller holds
// mu.
func (r *Reader) mineLocked(p *plan, i int, now time.Time, leaf time.Duration, s *soon) (bool, string) {
	if r.originHedge {
		if i != r.curLeaf() || !hedgeLeaf(r.joinLocked(p, now, s), s) {
			return false, ""
		}
		// The leaf may be hedged; in a crowd, the stripe still says who
		// takes it from the origin (its owner, the others once it is
		// overdue): every member of a crowd beside a busy seed hedged the
		// same leaves. Alone, the hedge's rule stands: it knows a leaf the
		// holder skipped (a damaged block it dropped, TestFaultSeedDamage),
		// which the stripe's due would have waited on as held.
		if r.stripe != nil && r.stripe.alone() {
			return true, "hedge alone"
		}
		mine, why := r.stripeMineLocked(i, now, leaf, s)
		return mine, "hedge " + why
	}
	return r.stripeMineLocked(i, now, leaf, s)
}

// stripeMineLocked is mineLocked's answer by the stripe alone. The caller
// holds mu.
func (r *Reader) stripeMineLocked(i int, now time.Time, leaf time.Duration, s *soon) (bool, string) {
	if r.stripe == nil {
		return true, "no stripe"
	}
	self, owner := r.f.cfg.Host.ID(), r.f.cfg.Host.ID()
	alone := r.stripe.alone()
	if !alone {
		owner = r.stripe.owner(i)
	}
	held := r.f.guard.held(r.leaves[i].Cid)
	pace := peerPace(r.peerTimes)
	inMesh := r.inMeshLocked(now, leaf, s)
	if inMesh && r.stats.PeerBytes == 0 {
		return false, ""
	}
	switch {
	case alone && !held && !inMesh:
		return true, "alone"
	case owner == self && !held && !inMesh:
		return true, "mine"
	case r.f.guard.isPenalised(owner):
		return true, "owner penalised" // until the stripe is made again without it
	}
	// Another's leaf, or this node's own that a peer already holds (it
	// said HAVE) or that the mesh brings: the peers are asked, and the
	// origin only once it is overdue.
	before := 0 // the owner's leaves before i: its origin requests go in file order
	for k := r.curLeaf(); k < i; k++ {
		if alone || r.stripe.owner(k) == owner {
			before++
		}
	}
	a := leafAsk{since: later(r.st[i].since, r.originSince), rank: 1 + before/r.f.cfg.OriginConcurrency,
		held: held, inMesh: inMesh, near: r.holderNear || r.borne, pace: pace, backup: r.stripe.place(i), // 0 when alone
		ownerActive: owner != self && r.f.guard.usefulSince(owner, now.Add(-r.f.cfg.PeerTimeout-leaf)),
		far:         owner != self && r.f.cfg.Host.Network().Connectedness(owner) != network.Connected}
	if i == r.curLeaf() {
		a.waitSince = r.waitSince
	}
	if !overdue(a, now, r.f.cfg.PeerTimeout, leaf, s) {
		return false, ""
	}
	r.f.log.Debug("leaf overdue from its stripe owner", "cid", r.leaves[i].Cid, "owner", owner,
		"held", a.held, "active", a.ownerActive, "mesh", a.inMesh, "rank", a.rank, "leaf", leaf, "asked", now.Sub(a.since), "waited", now.Sub(a.waitSince))
	switch {
	case alone:
		return true, "alone, waited"
	case owner == self:
		return true, "mine, waited"
	case a.held:
		return true, "overdue held"
	}
	return true, "overdue"
}

// inMeshLocked reports whether the leaves are left to the mesh
// (leftToMesh). The caller holds mu.
func (r *Reader) inMeshLocked(now time.Time, leaf time.Duration, s *soon) bool {
	gen := r.f.cfg.PeerTimeout + max(leaf, peerPace(r.peerTimes))
	if r.stats.PeerBytes == 0 && r.holderNear {
		gen = min(hedgeWaits*gen, max(gen, r.f.cfg.StallTimeout/2))
	}
	return leftToMesh(r.holderKnown, r.stats.PeerBytes > 0, r.start, now, gen, s)
}

// stuckAfter is how long the reader waits on a leaf asked of peers before
// it is asked again on a new bitswap session: past the guard's deadline for
// a HAVE's block (haveDeadline), under StallTimeout.
const stuckAfter = 3 * time.Second

// allProvidersPenalised reports whether providers were found and all of
// them are penalised. The caller holds mu.
func (r *Reader) allProvidersPenalised() bool {
	if len(r.provs) == 0 {
		return false
	}
	for _, p := range r.provs {
		if !r.f.guard.isPenalised(p) {
			return false
		}
	}
	return true
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

func (r *Reader) goOrigin(i int, l store.Leaf, q *req) {
	ctx := q.ctx
	if r.t.URL != "" {
		// One read of the whole file fulfils q with the others, and
		// while one is under way (it may have found that the origin
		// honours Range after all), it does.
		ignores := r.f.ignoresRange(r.t.URL)
		r.mu.Lock()
		if r.whole == nil && ignores && len(r.leaves) > 1 {
			r.whole = r.newReq()
			r.goWhole(r.whole)
		}
		whole := r.whole != nil
		r.mu.Unlock()
		if whole {
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
