package announce

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"
)

// Table defaults. See TableConfig.
const (
	// DefaultMaxEntries is TableConfig.MaxEntries's default.
	DefaultMaxEntries = 100_000
	// DefaultMaxEntriesPerPeer is TableConfig.MaxEntriesPerPeer's default.
	DefaultMaxEntriesPerPeer = 10_000
	// DefaultMaxTTL is TableConfig.MaxTTL's default: what the protocol
	// needs (a HAVE's default TTL is 3 min, 3 × the summary interval),
	// with room for a SummaryInterval of up to 3 min.
	DefaultMaxTTL = 10 * time.Minute
	// DefaultDHTTTL is TableConfig.DHTTTL's default.
	DefaultDHTTTL = 10 * time.Minute
	// DefaultMaxFetchers is TableConfig.MaxFetchers's default.
	DefaultMaxFetchers = 64
)

// Source says how the table learned an entry.
type Source int

const (
	// FromGossip: a HAVE message (including summaries and the
	// re-announcement a peer sends when it connects).
	FromGossip Source = iota + 1
	// FromDHT: a provider record found in the mesh's DHT.
	FromDHT
	// FromCaller: Table.Add.
	FromCaller
)

// String returns "gossip", "dht" or "caller".
func (s Source) String() string {
	switch s {
	case FromGossip:
		return "gossip"
	case FromDHT:
		return "dht"
	case FromCaller:
		return "caller"
	}
	return "unknown"
}

// TableConfig configures a Table. Zero fields mean the default beside them.
type TableConfig struct {
	// MaxEntries caps the (root, peer) pairs held. When full, the entry
	// refreshed least recently goes first. Default DefaultMaxEntries
	// (100,000: about 27 MiB, 33 MiB when each entry is of a root of its
	// own, as in a sybil flood; see BenchmarkTableMemory and
	// BenchmarkTableMemorySybils).
	MaxEntries int

	// MaxEntriesPerPeer caps the pairs of any one peer, so that one peer
	// cannot push out everybody else's: its own least recently refreshed
	// entry goes first. Default DefaultMaxEntriesPerPeer (10,000).
	MaxEntriesPerPeer int

	// MaxTTL caps how long an entry lives without being refreshed, whatever
	// the TTL a HAVE claims. Default DefaultMaxTTL (10 min).
	MaxTTL time.Duration

	// Evidence, if set, rates what this node knows of a peer beyond its
	// announcements: 0 for an unknown key, more for a connected peer, a
	// bootstrap or seed peer, a peer that delivered verified bytes (the
	// higher, the better). Entries of peers with evidence are evicted only
	// when no entry of an unknown peer is left, and Providers lists peers
	// by evidence first: keys are free, so a flood of unknown keys can
	// neither push out nor outrank them. It is called with the table's lock
	// held and must not call the Table. Nil: every peer is unknown.
	Evidence func(peer.ID) int

	// DHTTTL is how long an entry found in the DHT lives. Default
	// DefaultDHTTTL (10 min).
	DHTTTL time.Duration

	// MaxFetchers caps how many peers Fetchers returns for one root: the
	// ones with the most evidence, then the latest expiry. Default
	// DefaultMaxFetchers (64); negative means no cap.
	MaxFetchers int

	// Self is this node's peer ID, never listed as a provider.
	Self peer.ID

	// Addrs, if set, gives a provider's known addresses for the AddrInfo
	// that FindProvidersAsync returns (usually Host.Peerstore().Addrs).
	// Nil returns IDs only.
	Addrs func(peer.ID) []ma.Multiaddr

	// Fallback, if set, is asked by FindProvidersAsync when the table knows
	// no provider of a root, and what it finds is added to the table for
	// DHTTTL. The Announcer sets its DHT here. Nil: no fallback.
	Fallback routing.ContentDiscovery
}

// Change is one change of a Table, as told to subscribers.
type Change struct {
	Root cid.Cid
	Peer peer.ID
	// Added is true when Peer became a provider of Root, or when a
	// provider changed between fetching and holding it; false when it
	// stopped being one (DROP, expiry, eviction to keep the caps).
	Added  bool
	Source Source // for Added
	// Fetching, for Added, is true when Peer announced that it is
	// fetching Root (a FETCH message) and false when it holds it.
	Fetching bool
	// Missed counts the changes this subscriber lost, because its buffer
	// was full, just before this one.
	Missed int
}

type entryKey struct {
	root cid.Cid
	peer peer.ID
}

type entry struct {
	key      entryKey
	expires  time.Time
	source   Source
	fetching bool          // from a FETCH, not yet followed by a HAVE
	seq      uint64        // gossipsub seqno of the last message that set it; 0 otherwise
	ri       int           // index in Table.byRoot[key.root]
	in       *list.List    // Table.lru or Table.kept
	all      *list.Element // in Table.lru or Table.kept
	own      *list.Element // in Table.byPeer[peer]
}

// fetchEntry is a fetching entry, with when the table heard the FETCH that
// made it one (kept here, not in every entry: a table of HAVEs does not pay
// for it).
type fetchEntry struct {
	e     *entry
	since time.Time
}

type tableSub struct {
	ch     chan Change
	missed int
}

// Table is the provider table: which peers hold which content roots, as
// learned from HAVE and DROP messages, from peers' re-announcements when they
// connect and from the DHT. Entries expire; the table never holds more than
// its caps, evicting the least recently refreshed entries first.
//
// A connected peer is listed for what it announced, not merely for being
// connected: a peer that connects sends its summary at once, and a table
// that listed every neighbour for every root would make a fetcher wait on
// peers that have nothing instead of going to the origin at once.
//
// Table implements routing.ContentDiscovery, so a bitswap session or the
// fetch package can be seeded from it. It is safe for concurrent use.
type Table struct {
	cfg TableConfig

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	entries map[entryKey]*entry
	byRoot  map[cid.Cid][]*entry               // a root's entries, each at its entry.ri
	fetches map[cid.Cid]map[peer.ID]fetchEntry // the fetching entries of byRoot
	byPeer  map[peer.ID]*list.List             // *entry, least recently refreshed first
	lru     list.List                          // *entry of unknown peers, least recently refreshed first
	kept    list.List                          // *entry of peers with evidence, likewise
	subs    map[*tableSub]struct{}
	stats   TableStats
	// nextExpiry is at or before the earliest expiry of any entry (zero:
	// no entry), so that Sweep can skip its walk until then.
	nextExpiry time.Time
}

var _ routing.ContentDiscovery = (*Table)(nil)

// TableStats counts what a Table did.
type TableStats struct {
	Entries  int    // (root, peer) pairs held now
	Roots    int    // distinct roots held now
	Peers    int    // distinct peers held now
	Added    uint64 // new pairs
	Dropped  uint64 // pairs removed by Remove or a DROP
	Expired  uint64 // pairs removed because their TTL ran out
	Evicted  uint64 // pairs removed to keep a cap
	Fetching int    // pairs whose peer is fetching the root, now
	Stale    uint64 // gossip ignored: older than what set the pair
	Lookups  uint64 // FindProvidersAsync calls
	Fallback uint64 // of which the table knew nothing and asked the Fallback
}

// NewTable returns an empty Table. Close ends its fallback lookups.
func NewTable(cfg TableConfig) *Table {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxEntriesPerPeer <= 0 {
		cfg.MaxEntriesPerPeer = DefaultMaxEntriesPerPeer
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.DHTTTL <= 0 {
		cfg.DHTTTL = DefaultDHTTTL
	}
	if cfg.MaxFetchers == 0 {
		cfg.MaxFetchers = DefaultMaxFetchers
	}
	t := &Table{
		cfg:     cfg,
		entries: make(map[entryKey]*entry),
		byRoot:  make(map[cid.Cid][]*entry),
		fetches: make(map[cid.Cid]map[peer.ID]fetchEntry),
		byPeer:  make(map[peer.ID]*list.List),
		subs:    make(map[*tableSub]struct{}),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// Add records that p holds roots, for ttl (capped at MaxTTL; zero or less
// means MaxTTL), and returns how many pairs were new. Adding a pair that is
// held refreshes it. Adding Self does nothing.
func (t *Table) Add(p peer.ID, ttl time.Duration, roots ...cid.Cid) int {
	return t.add(p, ttl, FromCaller, roots)
}

func (t *Table) add(p peer.ID, ttl time.Duration, src Source, roots []cid.Cid) int {
	return t.update(update{peer: p, ttl: ttl, src: src}, roots)
}

// update is what one message (or call) says of its roots.
type update struct {
	peer     peer.ID
	ttl      time.Duration
	src      Source
	fetching bool   // a FETCH: the peer is fetching the roots
	seq      uint64 // the gossipsub seqno of the message; 0: not gossip
}

// stale reports whether u is older than what last set e: gossip of one
// author is ordered by its seqno, so a HAVE, FETCH or DROP overtaken by a
// later message of the same author changes nothing.
func (u update) stale(e *entry) bool {
	return u.seq != 0 && u.seq <= e.seq
}

// update records u for roots and returns how many pairs were new.
func (t *Table) update(u update, roots []cid.Cid) int {
	p := u.peer
	if p == t.cfg.Self || p == "" {
		return 0
	}
	ttl := u.ttl
	if ttl <= 0 || ttl > t.cfg.MaxTTL {
		ttl = t.cfg.MaxTTL
	}
	expires := time.Now().Add(ttl)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0
	}
	n := 0
	for _, r := range roots {
		if !r.Defined() {
			continue
		}
		e, ok := t.entries[entryKey{r, p}]
		if !ok {
			t.insertLocked(entryKey{r, p}, expires, u)
			n++
			continue
		}
		if u.stale(e) {
			t.stats.Stale++
			continue
		}
		if expires.After(e.expires) {
			e.expires = expires
		}
		e.in.Remove(e.all)
		e.in = t.listFor(p)
		e.all = e.in.PushBack(e)
		t.byPeer[p].MoveToBack(e.own)
		if u.src == FromGossip {
			e.seq = u.seq
			if e.fetching != u.fetching {
				t.setFetchingLocked(e, u.fetching)
				t.emitLocked(Change{Root: r, Peer: p, Added: true, Source: u.src, Fetching: u.fetching})
			}
		}
	}
	return n
}

// insertLocked adds a new entry for k, evicting to keep the caps, and tells
// subscribers.
func (t *Table) insertLocked(k entryKey, expires time.Time, u update) {
	p, r := k.peer, k.root
	if own := t.byPeer[p]; own != nil && own.Len() >= t.cfg.MaxEntriesPerPeer {
		t.removeLocked(own.Front().Value.(*entry), &t.stats.Evicted)
	}
	if len(t.entries) >= t.cfg.MaxEntries {
		victim := t.lru.Front()
		if victim == nil {
			victim = t.kept.Front()
		}
		t.removeLocked(victim.Value.(*entry), &t.stats.Evicted)
	}
	own := t.byPeer[p]
	if own == nil {
		own = list.New()
		t.byPeer[p] = own
	}
	if t.nextExpiry.IsZero() || expires.Before(t.nextExpiry) {
		t.nextExpiry = expires
	}
	e := &entry{key: k, expires: expires, source: u.src, seq: u.seq, in: t.listFor(p)}
	e.all = e.in.PushBack(e)
	e.own = own.PushBack(e)
	t.entries[k] = e
	e.ri = len(t.byRoot[r])
	t.byRoot[r] = append(t.byRoot[r], e)
	if u.fetching {
		t.setFetchingLocked(e, true)
	}
	t.stats.Added++
	t.emitLocked(Change{Root: r, Peer: p, Added: true, Source: u.src, Fetching: u.fetching})
}

// setFetchingLocked marks e as fetching or holding, keeping the fetches
// index.
func (t *Table) setFetchingLocked(e *entry, fetching bool) {
	e.fetching = fetching
	if fetching {
		t.stats.Fetching++
	} else {
		t.stats.Fetching--
	}
	r, p := e.key.root, e.key.peer
	m := t.fetches[r]
	if fetching {
		if m == nil {
			m = make(map[peer.ID]fetchEntry)
			t.fetches[r] = m
		}
		m[p] = fetchEntry{e, time.Now()}
		return
	}
	delete(m, p)
	if len(m) == 0 {
		delete(t.fetches, r)
	}
}

// Remove records that p no longer holds roots and returns how many pairs it
// removed.
func (t *Table) Remove(p peer.ID, roots ...cid.Cid) int {
	return t.remove(p, 0, roots)
}

// remove is Remove for a DROP of gossipsub seqno seq (0: not gossip): a
// pair set by a later message of p stays.
func (t *Table) remove(p peer.ID, seq uint64, roots []cid.Cid) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	u := update{seq: seq}
	for _, r := range roots {
		e, ok := t.entries[entryKey{r, p}]
		switch {
		case !ok:
		case u.stale(e):
			t.stats.Stale++
		default:
			t.removeLocked(e, &t.stats.Dropped)
			n++
		}
	}
	return n
}

// removeLocked removes e, counting it in counter, and tells subscribers.
func (t *Table) removeLocked(e *entry, counter *uint64) {
	delete(t.entries, e.key)
	e.in.Remove(e.all)
	if own := t.byPeer[e.key.peer]; own != nil {
		own.Remove(e.own)
		if own.Len() == 0 {
			delete(t.byPeer, e.key.peer)
		}
	}
	if es := t.byRoot[e.key.root]; len(es) > 0 {
		last := es[len(es)-1]
		es[e.ri], last.ri = last, e.ri
		es[len(es)-1] = nil
		if es = es[:len(es)-1]; len(es) == 0 {
			delete(t.byRoot, e.key.root)
		} else {
			t.byRoot[e.key.root] = es
		}
	}
	if e.fetching {
		t.setFetchingLocked(e, false)
	}
	*counter++
	t.emitLocked(Change{Root: e.key.root, Peer: e.key.peer})
}

// Sweep removes the entries whose TTL has run out and returns how many. The
// Announcer calls it periodically; lookups skip expired entries anyway.
//
// A sweep walks the table only when an entry may have expired: the table
// keeps a lower bound of the entries' expiries (refreshes move expiries
// later, never earlier), so a table whose entries are refreshed before
// they run out is walked about once per refresh period, not every call.
func (t *Table) Sweep() int {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Before(t.nextExpiry) {
		return 0
	}
	n := 0
	var next time.Time
	for _, l := range []*list.List{&t.lru, &t.kept} {
		for el := l.Front(); el != nil; {
			following := el.Next()
			e := el.Value.(*entry)
			switch {
			case !now.Before(e.expires):
				t.removeLocked(e, &t.stats.Expired)
				n++
			case next.IsZero() || e.expires.Before(next):
				next = e.expires
			}
			el = following
		}
	}
	t.nextExpiry = next
	return n
}

// evidence is TableConfig.Evidence of p, 0 without one. The caller holds mu.
func (t *Table) evidence(p peer.ID) int {
	if t.cfg.Evidence == nil {
		return 0
	}
	return t.cfg.Evidence(p)
}

// listFor is the eviction list of p's entries. The caller holds mu.
func (t *Table) listFor(p peer.ID) *list.List {
	if t.evidence(p) > 0 {
		return &t.kept
	}
	return &t.lru
}

// Providers returns the peers known to hold root, at most limit of them
// (limit <= 0: all): those with the most evidence (TableConfig.Evidence)
// first, and among equals the latest expiry first.
func (t *Table) Providers(root cid.Cid, limit int) []peer.ID {
	return t.listed(root, limit, func(*entry) bool { return true })
}

// listed returns the peers of root's unexpired entries that keep accepts,
// at most limit of them (limit <= 0: all), ranked as Providers says.
func (t *Table) listed(root cid.Cid, limit int, keep func(*entry) bool) []peer.ID {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.byRoot[root]
	es := make([]ranked, 0, len(m))
	for _, e := range m {
		if now.Before(e.expires) && keep(e) {
			es = append(es, ranked{e, t.evidence(e.key.peer)})
		}
	}
	return rankedPeers(es, limit)
}

// Holders returns the peers that announced they hold root whole (a HAVE
// or the DHT, not a FETCH still under way) and whose entry has not
// expired: at most limit of them (limit <= 0: all), those with the most
// evidence first, then the latest expiry. The fetch package asks it of its
// Crowd (fetch.Holders): a stripe leaves the leaves ahead of its reader to
// the mesh while one is known. Safe for concurrent use; the slice is the
// caller's.
func (t *Table) Holders(root cid.Cid, limit int) []peer.ID {
	return t.listed(root, limit, func(e *entry) bool { return !e.fetching })
}

// Fetchers returns the peers that announced they are fetching root (a
// FETCH message) and have since announced neither that they hold it (HAVE)
// nor that they gave up (DROP), and whose announcement has not expired
// (FetchingTTL): at most MaxFetchers of them, those with the most evidence
// first, then the latest expiry. It implements the fetch package's Crowd.
// It costs one map lookup and a sort of that root's fetchers; it is safe
// for concurrent use, and the slice is the caller's.
func (t *Table) Fetchers(root cid.Cid) []peer.ID {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.fetches[root]
	if len(m) == 0 {
		return nil
	}
	es := make([]ranked, 0, len(m))
	for _, f := range m {
		if e := f.e; now.Before(e.expires) {
			es = append(es, ranked{e, t.evidence(e.key.peer)})
		}
	}
	return rankedPeers(es, t.cfg.MaxFetchers)
}

// FetchStarts returns when this table first heard the FETCH by which each
// peer is listed as fetching root (see Fetchers; unlike Fetchers, not
// limited to MaxFetchers). A FETCH repeated while the peer is listed keeps
// the first time; one after its HAVE or DROP starts anew. It implements the
// fetch package's FetchStarts: a stripe counts a member's head start, the
// leaves it took alone before others joined it. Safe for concurrent use.
func (t *Table) FetchStarts(root cid.Cid) map[peer.ID]time.Time {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.fetches[root]
	starts := make(map[peer.ID]time.Time, len(m))
	for p, f := range m {
		if now.Before(f.e.expires) {
			starts[p] = f.since
		}
	}
	return starts
}

// rankedPeers sorts es (sortEntries) and returns the first limit peers
// (limit <= 0: all).
func rankedPeers(es []ranked, limit int) []peer.ID {
	sortEntries(es)
	if limit > 0 && len(es) > limit {
		es = es[:limit]
	}
	ps := make([]peer.ID, len(es))
	for i, e := range es {
		ps[i] = e.key.peer
	}
	return ps
}

// ranked is an entry with its peer's evidence.
type ranked struct {
	*entry
	ev int
}

// sortEntries orders es by evidence, then expiry, both descending.
func sortEntries(es []ranked) {
	slices.SortStableFunc(es, func(a, b ranked) int {
		if a.ev != b.ev {
			return b.ev - a.ev
		}
		return b.expires.Compare(a.expires)
	})
}

// Stats returns what the table holds and has done.
func (t *Table) Stats() TableStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.Entries = len(t.entries)
	s.Roots = len(t.byRoot)
	s.Peers = len(t.byPeer)
	return s
}

// Len returns the number of (root, peer) pairs held, expired ones included
// until a Sweep or lookup removes them.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// FindProvidersAsync implements routing.ContentDiscovery. It sends the peers
// the table knows to hold root (at most count; count <= 0 means all), with
// their known addresses, and closes the channel. When the table knows none
// and a Fallback is configured, it asks the Fallback instead, adds what it
// finds to the table and passes it on; the channel closes when the Fallback
// is done, ctx ends or the table closes. The channel is never left open by a
// cancelled ctx.
func (t *Table) FindProvidersAsync(ctx context.Context, root cid.Cid, count int) <-chan peer.AddrInfo {
	ps := t.Providers(root, count)
	t.mu.Lock()
	t.stats.Lookups++
	closed := t.closed
	fallback := len(ps) == 0 && t.cfg.Fallback != nil && !closed
	if fallback {
		t.stats.Fallback++
		t.wg.Add(1)
	}
	t.mu.Unlock()
	if !fallback {
		ch := make(chan peer.AddrInfo, len(ps))
		for _, p := range ps {
			ch <- t.addrInfo(p)
		}
		close(ch)
		return ch
	}
	ch := make(chan peer.AddrInfo)
	go func() {
		defer t.wg.Done()
		defer close(ch)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(t.ctx, cancel)
		defer stop()
		src := t.cfg.Fallback.FindProvidersAsync(ctx, root, count)
		defer func() {
			cancel()
			for range src { // let the fallback's goroutine end
			}
		}()
		sent := 0
		for ai := range src {
			if ai.ID == t.cfg.Self || ai.ID == "" {
				continue
			}
			t.add(ai.ID, t.cfg.DHTTTL, FromDHT, []cid.Cid{root})
			if len(ai.Addrs) == 0 {
				ai = t.addrInfo(ai.ID)
			}
			select {
			case ch <- ai:
				sent++
			case <-ctx.Done():
				return
			}
			if count > 0 && sent >= count {
				return
			}
		}
	}()
	return ch
}

func (t *Table) addrInfo(p peer.ID) peer.AddrInfo {
	ai := peer.AddrInfo{ID: p}
	if t.cfg.Addrs != nil {
		ai.Addrs = t.cfg.Addrs(p)
	}
	return ai
}

// tableSubBuffer is how many changes wait for a slow subscriber before newer
// ones are lost (and counted in Change.Missed).
const tableSubBuffer = 1024

// Subscribe returns a channel of the table's changes until ctx ends or the
// table closes, when it is closed. The table never waits for a subscriber:
// when the buffer (1024 changes) is full, changes are lost and the next one
// delivered says how many in Missed.
func (t *Table) Subscribe(ctx context.Context) <-chan Change {
	sub := &tableSub{ch: make(chan Change, tableSubBuffer)}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		close(sub.ch)
		return sub.ch
	}
	t.subs[sub] = struct{}{}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		select {
		case <-ctx.Done():
		case <-t.ctx.Done():
		}
		t.mu.Lock()
		delete(t.subs, sub)
		close(sub.ch)
		t.mu.Unlock()
	}()
	return sub.ch
}

func (t *Table) emitLocked(c Change) {
	for sub := range t.subs {
		c.Missed = sub.missed
		select {
		case sub.ch <- c:
			sub.missed = 0
		default:
			sub.missed++
		}
	}
}

// Close ends the table's fallback lookups and subscriptions and waits for
// them. The table stays readable; Add does nothing after Close. Close is
// idempotent; later calls return an error wrapping ErrClosed.
func (t *Table) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return fmt.Errorf("announce: table close: %w", ErrClosed)
	}
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
	return nil
}
