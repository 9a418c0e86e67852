package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/internal/verified"
)

// Fetcher gets content by CID from the local store, from peers over bitswap
// and from HTTP origins, verifying every block and streaming in file order.
// It also runs the bitswap server through which this peer serves what its
// store holds, within Config.ServeBytesPerSecond and Config.ServeConcurrency.
//
// Create one with New; Open starts a fetch. A Fetcher is safe for concurrent
// use. Close ends every fetch and the bitswap client and server it built;
// it does not close the Host, the Store or the Providers it was given.
type Fetcher struct {
	cfg     Config
	log     *slog.Logger
	bs      *bitswap.Bitswap
	guard   *guard
	http    *http.Client
	ownHTTP *http.Transport
	metrics *metrics
	served  atomic.Int64
	dialing atomic.Int64  // dials of providers under way (dialbudget.go)
	direct  directWants   // first wants sent to providers directly (firstwant.go)
	urgent  *urgentWants  // blocks peers want urgently (urgent.go)
	order   *serveOrder   // whose request the server serves next (serveorder.go); nil: boxo's order
	backlog *storeBacklog // blocks being stored (backlog.go)
	inflow  *inflow       // blocks on their way (inflow.go)

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	rateMu     sync.Mutex
	originRate float64 // bytes/s of one origin request, averaged
	originAll  float64 // bytes/s of the origin requests in flight together, averaged
	originN    int     // origin requests in flight

	callMu sync.Mutex
	calls  map[string]*originCall // origin requests in flight, by URL and leaf

	noRange    sync.Map     // origins (scheme://host) that ignored Range: whole.go
	okRange    sync.Map     // origins that honoured Range
	noRangeURL sync.Map     // files that ignored Range
	noRangeN   atomic.Int64 // entries of noRangeURL (bounded: maxNoRangeURLs)

	mu      sync.Mutex
	closed  bool
	readers map[*Reader]struct{}
	totals  Totals
}

// New builds a Fetcher on cfg.Host: a bitswap client and server (protocol
// /ipfs/bitswap/1.2.0 and older) tuned for throughput, serving cfg.Store.
// It fails on a Config without Host or Store, or with negative durations.
func New(cfg Config) (*Fetcher, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	f := &Fetcher{cfg: cfg, log: cfg.Logger, readers: make(map[*Reader]struct{}), calls: make(map[string]*originCall), urgent: newUrgentWants()}
	if cfg.ServeEvenly {
		f.order = newServeOrder(cfg.MaxOutstandingBytesPerPeer)
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.log = f.log.With("pkg", "fetch")
	f.totals.Peers = make(map[peer.ID]int64)
	if cfg.PrometheusRegisterer != nil {
		m, err := newMetrics(cfg.PrometheusRegisterer, f)
		if err != nil {
			return nil, err
		}
		f.metrics = m
	}
	f.http = cfg.HTTPClient
	if f.http == nil {
		f.ownHTTP = &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: 2 * DefaultOriginConcurrency,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		}
		f.http = &http.Client{Transport: f.ownHTTP}
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())

	gate := cfg.Gater
	if gate == nil {
		gate = new(Gater)
	}
	side := newSideBlocks() // sideblocks.go: received blocks without copies
	f.inflow = newInflow()  // inflow.go: blocks on their way
	f.backlog = newStoreBacklog(storeBacklogBytes)
	f.guard = newGuard(bsnet.NewFromIpfsHost(filterHost{Host: cfg.Host, gate: gate, rejected: f.tooLarge, side: side, backlog: f.backlog, done: f.ctx, pace: newWantPacer(), inflow: f.inflow}), f)
	f.guard.side = side
	serving := newServingStore(cfg.Store, cfg.ServeBytesPerSecond, cfg.ServeBurst, cfg.ServeConcurrency, f.urgent, f.order)
	var opts []bitswap.Option
	if f.order != nil {
		opts = append(opts, bitswap.WithTaskComparator(f.order.less)) // serveorder.go
	}
	f.bs = bitswap.New(f.ctx, f.guard, nil, serving, append(opts,
		// Providers are found by root CID here and connected before the
		// session asks; bitswap's own search would ask about leaf CIDs.
		bitswap.ProviderSearchDelay(time.Hour),
		bitswap.WithoutDuplicatedBlockStats(),
		bitswap.MaxOutstandingBytesPerPeer(cfg.MaxOutstandingBytesPerPeer),
		bitswap.WithPeerBlockRequestFilter(func(p peer.ID, _ cid.Cid) bool {
			return !f.guard.refusedSender(p)
		}),
		bitswap.TaskWorkerCount(serveWorkers(cfg.ServeConcurrency)),
	)...)
	return f, nil
}

// Close ends every open fetch (their Readers then fail with ErrClosed, and
// Config.ClosedError),
// stops the bitswap client and server, closes the Fetcher's own HTTP
// connections and unregisters its metrics. It waits for every goroutine the
// Fetcher started. Later calls return an error wrapping ErrClosed.
func (f *Fetcher) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return fmt.Errorf("fetch: close: %w", ErrClosed)
	}
	f.closed = true
	rs := make([]*Reader, 0, len(f.readers))
	for r := range f.readers {
		rs = append(rs, r)
	}
	f.mu.Unlock()
	why := ErrClosed
	if f.cfg.ClosedError != nil {
		why = fmt.Errorf("%w (%w)", ErrClosed, f.cfg.ClosedError)
	}
	for _, r := range rs {
		r.closeWith(why)
	}
	f.guard.stop()
	f.cancel()
	f.guard.haves.close()
	f.wg.Wait()
	err := f.bs.Close()
	if f.ownHTTP != nil {
		f.ownHTTP.CloseIdleConnections()
	}
	if f.metrics != nil {
		f.metrics.unregister()
	}
	if err != nil {
		return fmt.Errorf("fetch: close bitswap: %w", err)
	}
	return nil
}

// windowLeaves is how many leaves from the reader's position a Reader holds
// in memory (Config.WindowBytes, at least one).
func (f *Fetcher) windowLeaves() int {
	if f.cfg.WindowBytes < 0 {
		return f.cfg.ReadAhead
	}
	return max(1, int(f.cfg.WindowBytes/dagfile.ChunkSize))
}

// readBack is how many leaves from the reader's position a Reader reads
// from the store ahead of it: a local read takes about a millisecond, so
// two keep a reader fed, and a slow reader (a player) holds two leaves
// read back rather than its whole window.
const readBack = 2

// readBackLeaves is how many leaves from the reader's position are read
// from the store ahead of it: readBack, within the window.
func (f *Fetcher) readBackLeaves() int { return min(readBack, f.windowLeaves()) }

// Config returns the configuration in effect, defaults filled in.
func (f *Fetcher) Config() Config { return f.cfg }

// Penalised reports whether p is being ignored for having sent a bad block
// or for advertising content and sending nothing (see Config.Penalty).
func (f *Fetcher) Penalised(p peer.ID) bool { return f.guard.isPenalised(p) }

// Delivered returns the verified bytes p delivered first to fetches of
// this Fetcher since New: evidence that p is an honest peer.
func (f *Fetcher) Delivered(p peer.ID) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.totals.Peers[p]
}

// Totals is the accounting of all fetches of a Fetcher since New, and of
// what it served to others.
type Totals struct {
	// Fetches counts Open calls that returned a Reader; Completed those
	// whose every leaf was fetched; Failed those that ended with an error
	// other than being closed.
	Fetches, Completed, Failed int64
	// LocalBytes, PeerBytes and OriginBytes add up the fetches' (see
	// Stats), but for a leaf two fetches took from one origin request
	// (concurrent fetches of the same content share it): the origin's
	// once, local for the others, so that OriginBytes is what the origin
	// delivered. A leaf read back from the store after a backwards Seek
	// counts again, as local.
	LocalBytes, PeerBytes, OriginBytes int64
	// DuplicateBytes counts verified copies that arrived after another
	// source had won: the cost of hedging.
	DuplicateBytes int64
	// Peers maps each peer to the bytes it delivered first.
	Peers map[peer.ID]int64
	// BadBlocks counts blocks that failed verification; PenalisedPeers the
	// peers penalised for sending them.
	BadBlocks, PenalisedPeers int64
	// ServedBytes counts block bytes served to other peers.
	ServedBytes int64
	// OriginSentBytes and OriginWastedBytes add up the fetches' (see
	// Stats): what origins sent, and what of it was not a first verified
	// copy (OriginSentBytes - OriginBytes, or 0).
	OriginSentBytes, OriginWastedBytes int64
	// MovedWants counts want-blocks moved from a busy peer to another
	// holder (a peer that delivers had sat on them for 500 ms while a peer
	// with fewer of this node's wants said HAVE).
	MovedWants int64
}

// Offload is the share of fetched network bytes that came from peers:
// PeerBytes / (PeerBytes + OriginBytes), or 0 when nothing came from the
// network.
func (t Totals) Offload() float64 { return offload(t.PeerBytes, t.OriginBytes) }

func offload(p, o int64) float64 {
	if p+o == 0 {
		return 0
	}
	return float64(p) / float64(p+o)
}

// Stats returns a copy of the Fetcher's totals.
func (f *Fetcher) Stats() Totals {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.totals
	t.Peers = make(map[peer.ID]int64, len(f.totals.Peers))
	for p, n := range f.totals.Peers {
		t.Peers[p] = n
	}
	t.ServedBytes = f.served.Load()
	t.OriginWastedBytes = max(t.OriginSentBytes-t.OriginBytes, 0)
	return t
}

// wakeAll makes every open fetch look at its state again.
func (f *Fetcher) wakeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for r := range f.readers {
		r.wake()
	}
}

func (f *Fetcher) rejected(e *VerifyError) {
	f.mu.Lock()
	f.totals.BadBlocks++
	f.mu.Unlock()
	if f.metrics != nil {
		f.metrics.badBlocks.Inc()
	}
	f.log.Info("bad block", "cid", e.Cid, "peer", e.Peer, "source", string(e.Source))
}

// tooLarge logs a bitswap stream reset for a message over the limits (see
// inboundStream).
func (f *Fetcher) tooLarge(s network.Stream, err error) {
	f.log.Info("bitswap message refused", "peer", s.Conn().RemotePeer(), "err", err)
}

func (f *Fetcher) countPenalty() {
	f.mu.Lock()
	f.totals.PenalisedPeers++
	f.mu.Unlock()
	if f.metrics != nil {
		f.metrics.penalised.Inc()
	}
}

// countMoved adds n want-blocks moved from a busy peer to the totals.
func (f *Fetcher) countMoved(n int) {
	f.mu.Lock()
	f.totals.MovedWants += int64(n)
	f.mu.Unlock()
	if f.metrics != nil {
		f.metrics.moved.Add(float64(n))
	}
}

// noteOriginSent adds n bytes an origin sent to the totals.
func (f *Fetcher) noteOriginSent(n int64) {
	f.mu.Lock()
	f.totals.OriginSentBytes += n
	f.mu.Unlock()
	if f.metrics != nil {
		f.metrics.originSent.Add(float64(n))
	}
}

// account adds a delivered leaf to the totals.
func (f *Fetcher) account(src Source, p peer.ID, n int64, dup bool) {
	f.mu.Lock()
	if dup {
		f.totals.DuplicateBytes += n
	} else {
		switch src {
		case SourceLocal:
			f.totals.LocalBytes += n
		case SourcePeer:
			f.totals.PeerBytes += n
			if p != "" {
				f.totals.Peers[p] += n
			}
		case SourceOrigin:
			f.totals.OriginBytes += n
		}
	}
	f.mu.Unlock()
	if f.metrics != nil {
		if dup {
			f.metrics.dupBytes.WithLabelValues(string(src)).Add(float64(n))
		} else {
			f.metrics.bytes.WithLabelValues(string(src)).Add(float64(n))
		}
	}
}

// peerGetter is the Store's read for blocks that were checked when they
// were stored and are checked by the store's own checksums on read
// (*store.Store's GetForPeer skips the sha2-256 of large blocks).
type peerGetter interface {
	GetForPeer(ctx context.Context, c cid.Cid) (blocks.Block, error)
}

// readLocal reads a block from the Store. A leaf the window let go of
// (readBack: this fetch verified it and stored it moments ago) is read
// without hashing it again where the Store can, saving a sha2-256 per MiB.
func (f *Fetcher) readLocal(ctx context.Context, c cid.Cid, readBack bool) (blocks.Block, error) {
	if pg, ok := f.cfg.Store.(peerGetter); ok && readBack {
		return pg.GetForPeer(ctx, c)
	}
	return f.cfg.Store.Get(ctx, c)
}

// keep stores a verified block and tells bitswap: its server, so that
// peers that want it get it, and for a block that did not come from a peer
// its client too, so that the wants for it are cancelled.
func (f *Fetcher) keep(ctx context.Context, b blocks.Block, src Source) error {
	// Every block kept was hashed against its CID just before (by bitswap
	// on receipt, or by verify for origin blocks): the store need not hash
	// it again. The caller counts it in the store backlog (keepCounted).
	err := f.cfg.Store.Put(ctx, verified.Wrap(b))
	if err != nil {
		return err
	}
	f.guard.haves.arrived(b.Cid()) // haves.go: not behind the blocks in boxo's queue
	if src == SourcePeer {
		err = f.bs.Server.NotifyNewBlocks(ctx, b)
	} else {
		err = f.bs.NotifyNewBlocks(ctx, b)
	}
	if err != nil {
		f.log.Debug("notify bitswap", "cid", b.Cid(), "err", err)
	}
	return nil
}

// serveWorkers is how many workers bitswap's server sends with: half of
// Config.ServeConcurrency, at least 4 (apps: 4; the default: 8; seeds:
// 32), so that a few peers that do not read their replies (each holding
// up to perPeerSends workers until its deadlines cut it, see sendLimiter)
// cannot stop the server. Each worker holds a block read for sending and,
// while it writes, boxo's buffer for the message (2 MiB for a 1 MiB leaf),
// so an app keeps few; a seed keeps more, as a worker is busy for as long
// as one peer takes to read a block: 32 peers reading at 2 MiB/s each keep
// 32 workers busy and a seed's uplink at 64 MiB/s. More workers than
// needed also cost order: blocks read for sending at once come out of the
// serving cap in no set order.
func serveWorkers(concurrency int) int { return max(4, concurrency/2) }

var errFetcherClosed = errors.New("fetcher closed")
