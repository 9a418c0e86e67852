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
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
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
	s := &SummaryService{cfg: cfg, log: log.With("pkg", "announce"), proto: SummaryProtocol(cfg.Name)}
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
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		st.Reset()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
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

func (s *SummaryService) answer(st network.Stream) error {
	if err := st.SetDeadline(time.Now().Add(s.cfg.Timeout)); err != nil {
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
	b, err := EncodeSummary(s.summary(st.Conn().RemotePeer(), req))
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
		sum.Others = s.cfg.Table.holders(asker, MaxSummaryHolders)
		ps := s.cfg.Host.Peerstore()
		for i := range sum.Others {
			sum.Others[i].Addrs = ps.Addrs(sum.Others[i].Peer)
		}
	}
	return sum
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
