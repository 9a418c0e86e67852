package announce

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Summary service defaults. See SummaryConfig.
const (
	// DefaultSummaryTTL is SummaryConfig.TTL's default: as long as a
	// gossiped HAVE lives by default (3 × DefaultSummaryInterval), after
	// which the gossiped summaries have taken over.
	DefaultSummaryTTL = 3 * DefaultSummaryInterval
	// DefaultSummaryTimeout is SummaryConfig.Timeout's default.
	DefaultSummaryTimeout = 10 * time.Second
	// DefaultSummaryConcurrency is SummaryConfig.Concurrency's default.
	DefaultSummaryConcurrency = 16
)

// Per asker, the service answers at most summaryPerPeer requests at once
// (one peer's silent streams held every slot: every other asker was
// refused), waits at most summaryReadTimeout for the 2-byte request, and
// lists other holders (SummaryRequest.Others, a scan of the table and up
// to MaxSummarySize bytes) for summaryOthersBurst requests, then one per
// summaryOthersEvery; beyond that it answers with its own roots only. One
// peer looping requests with Others had 18 to 84 answers of 1 MiB a second
// out of a seed whose table a flood had filled, and held the table's lock
// for each scan: its lookups took up to 0.5 s. The holders listed are
// shared by the answers within summaryOthersFresh when the table is large.
const (
	summaryPerPeer      = 2
	summaryReadTimeout  = 2 * time.Second
	summaryOthersBurst  = 8 // a page asks at join, and again at most once a second when it dials
	summaryOthersEvery  = 2 * time.Second
	summaryOthersFresh  = time.Second
	summaryAskersMax    = 4096 // askers remembered; the oldest idle forgotten
	summaryHoldersExtra = 1    // listed beyond MaxSummaryHolders: the asker left out
	summaryScanShared   = 1000 // table entries from which a listing is shared
)

// SummaryConfig configures a SummaryService. Zero fields mean the default
// stated beside them.
type SummaryConfig struct {
	// Name is the mesh's name; the service speaks SummaryProtocol(Name).
	// Required.
	Name string

	// Host is the libp2p host the service registers its handler on.
	// Required. The service does not close it.
	Host host.Host

	// Holdings is what this peer answers it holds. Nil: it answers with no
	// roots of its own.
	Holdings Holdings

	// Table, if set, is where this peer answers other holders from when
	// asked (SummaryRequest.Others): seeds set it. Nil: it lists only its
	// own roots. The service does not close it.
	Table *Table

	// TTL is how long this peer's answers say they stay valid. Default
	// DefaultSummaryTTL (3 min); at most MaxTTLSeconds.
	TTL time.Duration

	// Timeout bounds one request, asked or answered: the stream is reset
	// when it runs out. Default DefaultSummaryTimeout (10 s).
	Timeout time.Duration

	// Concurrency caps the requests answered at once; a request beyond it
	// is reset at once. Default DefaultSummaryConcurrency (16); negative
	// means no cap.
	Concurrency int

	// Logger receives the service's logs. Nil discards them.
	Logger *slog.Logger
}

// SummaryService answers summary requests on a host and asks them of
// peers (see the package documentation, "Summary request"). It is safe for
// concurrent use; Close removes the handler and waits for the answers
// under way.
type SummaryService struct {
	cfg   SummaryConfig
	log   *slog.Logger
	proto protocol.ID
	slots chan struct{} // nil: no cap

	mu     sync.Mutex
	closed bool
	askers map[peer.ID]*asker // under mu
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc

	othersMu  sync.Mutex
	others    []Holder // the table's holders, listed at othersAt
	othersAt  time.Time
	othersBig bool // the table held summaryScanShared entries or more then
}

// asker is what the service keeps of one peer that asks it: its answers
// under way, and its allowance of answers listing other holders (a token
// bucket of summaryOthersBurst, one token per summaryOthersEvery).
type asker struct {
	active int
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// NewSummaryService registers the summary handler on cfg.Host.
func NewSummaryService(cfg SummaryConfig) (*SummaryService, error) {
	if err := checkName(cfg.Name); err != nil {
		return nil, fmt.Errorf("announce: summary service: %w", err)
	}
	if cfg.Host == nil {
		return nil, fmt.Errorf("announce: summary service: %w: no Host", ErrBadConfig)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultSummaryTTL
	}
	cfg.TTL = min(cfg.TTL, MaxTTLSeconds*time.Second)
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultSummaryTimeout
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultSummaryConcurrency
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &SummaryService{cfg: cfg, log: log.With("pkg", "announce"), proto: SummaryProtocol(cfg.Name), askers: make(map[peer.ID]*asker)}
	if cfg.Concurrency > 0 {
		s.slots = make(chan struct{}, cfg.Concurrency)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cfg.Host.SetStreamHandler(s.proto, s.handle)
	return s, nil
}

// Protocol returns the protocol ID the service speaks.
func (s *SummaryService) Protocol() protocol.ID { return s.proto }

func (s *SummaryService) handle(st network.Stream) {
	p := st.Conn().RemotePeer()
	s.mu.Lock()
	a := s.askerLocked(p, time.Now())
	if s.closed || a.active >= summaryPerPeer {
		s.mu.Unlock()
		st.Reset()
		return
	}
	a.active++
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		a.active--
		s.mu.Unlock()
	}()
	if s.slots != nil {
		select {
		case s.slots <- struct{}{}:
			defer func() { <-s.slots }()
		default:
			st.Reset()
			return
		}
	}
	stop := context.AfterFunc(s.ctx, func() { st.Reset() })
	defer stop()
	if err := s.answer(st); err != nil {
		s.log.Debug("summary answer failed", "peer", st.Conn().RemotePeer(), "err", err)
		st.Reset()
		return
	}
	st.Close()
}

// askerLocked returns p's record, made if new; over summaryAskersMax
// records, those with no answer under way are forgotten first. The caller
// holds mu.
func (s *SummaryService) askerLocked(p peer.ID, now time.Time) *asker {
	a := s.askers[p]
	if a != nil {
		return a
	}
	if len(s.askers) >= summaryAskersMax {
		for q, b := range s.askers {
			if b.active == 0 {
				delete(s.askers, q)
			}
		}
	}
	a = &asker{tokens: summaryOthersBurst, at: now}
	s.askers[p] = a
	return a
}

// othersAllowed takes one of p's answers listing other holders, and
// reports whether it had one left.
func (s *SummaryService) othersAllowed(p peer.ID, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.askerLocked(p, now)
	a.tokens = min(summaryOthersBurst, a.tokens+now.Sub(a.at).Seconds()/summaryOthersEvery.Seconds())
	a.at = now
	if a.tokens < 1 {
		return false
	}
	a.tokens--
	return true
}

func (s *SummaryService) answer(st network.Stream) error {
	now := time.Now()
	if err := st.SetDeadline(now.Add(min(s.cfg.Timeout, summaryReadTimeout))); err != nil {
		return err
	}
	buf := make([]byte, summaryRequestSize)
	if _, err := io.ReadFull(st, buf); err != nil {
		return err
	}
	req, err := DecodeSummaryRequest(buf)
	if err != nil {
		return err
	}
	if err := st.SetDeadline(now.Add(s.cfg.Timeout)); err != nil {
		return err
	}
	p := st.Conn().RemotePeer()
	if req.Others && !s.othersAllowed(p, time.Now()) {
		req.Others = false
		s.log.Debug("summary: other holders not listed again so soon", "peer", p)
	}
	b, err := EncodeSummary(s.summary(p, req))
	if err != nil {
		return err
	}
	_, err = st.Write(b)
	return err
}

// summary is what this peer answers asker.
func (s *SummaryService) summary(asker peer.ID, req SummaryRequest) Summary {
	sum := Summary{TTL: s.cfg.TTL}
	if s.cfg.Holdings != nil {
		for _, r := range s.cfg.Holdings.Roots() {
			sum.Own = append(sum.Own, r.Cid)
		}
	}
	if req.Others && s.cfg.Table != nil {
		sum.Others = s.holders(asker)
		ps := s.cfg.Host.Peerstore()
		for i := range sum.Others {
			sum.Others[i].Addrs = ps.Addrs(sum.Others[i].Peer)
		}
	}
	return sum
}

// holders lists the table's holders but asker (Table.holders), from a
// list shared by the answers within summaryOthersFresh when the table is
// large (summaryScanShared entries): each scan holds the table's lock, for
// up to 0.24 s at 100,000 entries. A smaller table is listed afresh for
// each answer, so that a holder heard a moment ago is in it. The Holders are copies; their Roots are shared and
// not to be changed.
func (s *SummaryService) holders(asker peer.ID) []Holder {
	now := time.Now()
	s.othersMu.Lock()
	if !s.othersBig || now.Sub(s.othersAt) >= summaryOthersFresh {
		s.others = s.cfg.Table.holders("", MaxSummaryHolders+summaryHoldersExtra)
		s.othersAt, s.othersBig = now, s.cfg.Table.Len() >= summaryScanShared
	}
	all := s.others
	s.othersMu.Unlock()
	out := make([]Holder, 0, min(len(all), MaxSummaryHolders))
	for _, h := range all {
		if h.Peer != asker && len(out) < MaxSummaryHolders {
			out = append(out, Holder{Peer: h.Peer, Roots: h.Roots})
		}
	}
	return out
}

// Request asks p for its summary (and, with req.Others, the holders it
// knows of) and returns the answer, which the caller trusts as much as it
// trusts p. The stream is bounded by ctx and Config.Timeout. It fails with
// an error wrapping ErrClosed after Close.
func (s *SummaryService) Request(ctx context.Context, p peer.ID, req SummaryRequest) (Summary, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Summary{}, fmt.Errorf("announce: summary of %s: %w", p, ErrClosed)
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	sum, err := s.request(ctx, p, req)
	if err != nil {
		return Summary{}, fmt.Errorf("announce: summary of %s: %w", p, err)
	}
	return sum, nil
}

func (s *SummaryService) request(ctx context.Context, p peer.ID, req SummaryRequest) (Summary, error) {
	st, err := s.cfg.Host.NewStream(network.WithNoDial(ctx, "summary of a connected peer"), p, s.proto)
	if err != nil {
		return Summary{}, err
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	if _, err := st.Write(EncodeSummaryRequest(req)); err != nil {
		st.Reset()
		return Summary{}, err
	}
	if err := st.CloseWrite(); err != nil {
		st.Reset()
		return Summary{}, err
	}
	b, err := io.ReadAll(io.LimitReader(st, MaxSummarySize+1))
	if err != nil {
		st.Reset()
		if ctx.Err() != nil {
			return Summary{}, ctx.Err()
		}
		return Summary{}, err
	}
	if len(b) > MaxSummarySize {
		st.Reset() // the rest is not read
	} else {
		st.Close()
	}
	return DecodeSummary(b)
}

// Close removes the handler, ends the requests and answers under way and
// waits for them. It is idempotent; later calls return an error wrapping
// ErrClosed.
func (s *SummaryService) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("announce: summary service close: %w", ErrClosed)
	}
	s.closed = true
	s.mu.Unlock()
	s.cfg.Host.RemoveStreamHandler(s.proto)
	s.cancel()
	s.wg.Wait()
	return nil
}

// holders lists the peers the table knows to hold content (not except), those
// with evidence first and the most recently refreshed first among them, at
// most limit of them, with their unexpired roots (the most recently refreshed
// first).
func (t *Table) holders(except peer.ID, limit int) []Holder {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Holder
	index := make(map[peer.ID]int)
	// Peers with evidence first (see TableConfig.Evidence), then the rest.
	for _, l := range []*list.List{&t.kept, &t.lru} {
		for el := l.Back(); el != nil; el = el.Prev() {
			e := el.Value.(*entry)
			p := e.key.peer
			if p == except || !now.Before(e.expires) {
				continue
			}
			i, ok := index[p]
			if !ok {
				if len(out) == limit {
					continue
				}
				i = len(out)
				index[p] = i
				out = append(out, Holder{Peer: p})
			}
			out[i].Roots = append(out[i].Roots, e.key.root)
		}
	}
	return out
}
