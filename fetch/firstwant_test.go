package fetch_test

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msgio "github.com/libp2p/go-msgio"

	"github.com/meshcdn/meshcdn/fetch"
)

// scripted is a host speaking the real bitswap protocol (boxo's message
// format, a stream per message as bitswap sends) with a scripted server: it
// records every want and cancel it receives, in order, and answers a
// want-block for a block it holds with the block after blockDelay, a
// want-have with HAVE unless noHaves, and a want for a block it lacks with
// DONT_HAVE when asked to. With haveDelay its HAVEs and DONT_HAVEs go
// that long after the want; withhold names blocks whose want-blocks it
// takes and never answers. With pace it sends one block at a time, over
// all its streams, each pace after the one before, as a holder at its
// serving cap does; with reverse a message's blocks go last first, as a
// holder serving wants by the priorities they had when asked may send
// them. A block in sitFor is sent for the first want-block of it that
// comes that long or more after the first, as a holder that dropped the
// wants before sends one asked anew.
type scripted struct {
	h          host.Host
	blocks     map[cid.Cid]blocks.Block
	blockDelay time.Duration
	noHaves    bool
	haveDelay  time.Duration
	withhold   func(cid.Cid) bool
	sitFor     map[cid.Cid]time.Duration
	pace       time.Duration
	trickle    int // bytes a second each block is sent at (0: at once)
	reverse    bool
	paced      sync.Mutex // held while a paced block waits its turn and goes

	mu      sync.Mutex
	msgs    [][]bsmsg.Entry       // received wantlists, in order of arrival
	asked   map[cid.Cid]bool      // want-blocks taken (answered or to be)
	replyTo []int                 // index in msgs of the message each block sent answered
	firstWB map[cid.Cid]time.Time // when the first want-block of a CID came
	sitDone map[cid.Cid]bool      // a want-block of a CID in sitFor answered
	// cancelsBefore counts, per block sent, the cancels of it received
	// before it was sent
	cancelsBefore map[cid.Cid]int
	sent          chan struct{} // gets a value after each block sent
	got           chan struct{} // gets a value (if empty) after each message received
}

func newScripted(t testing.TB, hold ...blocks.Block) *scripted {
	t.Helper()
	s := &scripted{h: newHost(t), blocks: make(map[cid.Cid]blocks.Block), asked: make(map[cid.Cid]bool), sent: make(chan struct{}, 16), got: make(chan struct{}, 1),
		firstWB: make(map[cid.Cid]time.Time), sitDone: make(map[cid.Cid]bool), cancelsBefore: make(map[cid.Cid]int)}
	for _, b := range hold {
		s.blocks[b.Cid()] = b
	}
	for _, p := range bitswapProtocols {
		s.h.SetStreamHandler(p, s.serve)
	}
	return s
}

func (s *scripted) info() peer.AddrInfo { return peer.AddrInfo{ID: s.h.ID(), Addrs: s.h.Addrs()} }

func (s *scripted) serve(st network.Stream) {
	defer st.Reset()
	from := st.Conn().RemotePeer()
	r := msgio.NewVarintReaderSize(st, network.MessageSizeMax)
	for {
		m, _, err := bsmsg.FromMsgReader(r)
		if err != nil {
			return
		}
		wl := m.Wantlist()
		s.mu.Lock()
		k := len(s.msgs)
		s.msgs = append(s.msgs, wl)
		select {
		case s.got <- struct{}{}:
		default:
		}
		presence := bsmsg.New(false)
		var want []blocks.Block
		for _, e := range wl {
			b, ok := s.blocks[e.Cid]
			switch {
			case e.Cancel:
			case ok && e.WantType == pb.Message_Wantlist_Block:
				if s.answers(e.Cid) {
					want = append(want, b)
				}
			case ok && !s.noHaves:
				presence.AddHave(e.Cid)
			case !ok && e.SendDontHave:
				presence.AddDontHave(e.Cid)
			}
		}
		s.mu.Unlock()
		if !presence.Empty() {
			if s.haveDelay > 0 {
				time.AfterFunc(s.haveDelay, func() { send(s.h, from, presence) })
			} else {
				send(s.h, from, presence)
			}
		}
		if len(want) > 0 {
			time.Sleep(s.blockDelay)
			if s.reverse {
				slices.Reverse(want)
			}
			for _, b := range want { // a message each, as a holder sends 1 MiB leaves
				s.sendPaced(from, b, k)
			}
			s.sent <- struct{}{}
		}
	}
}

// answers records a want-block of c and reports whether to send c: for
// the first want-block of it unless withheld; for a CID in sitFor, for the
// first that comes sitFor or more after the first. The caller holds mu.
func (s *scripted) answers(c cid.Cid) bool {
	first := !s.asked[c]
	s.asked[c] = true
	if sit, ok := s.sitFor[c]; ok {
		if first {
			s.firstWB[c] = time.Now()
		}
		if s.sitDone[c] || time.Since(s.firstWB[c]) < sit {
			return false
		}
		s.sitDone[c] = true
		return true
	}
	return first && (s.withhold == nil || !s.withhold(c))
}

// sendPaced sends b to p, answering message k, at s.pace.
func (s *scripted) sendPaced(p peer.ID, b blocks.Block, k int) {
	if s.pace > 0 {
		s.paced.Lock()
		defer s.paced.Unlock()
		time.Sleep(s.pace)
	}
	reply := bsmsg.New(false)
	reply.AddBlock(b)
	s.mu.Lock()
	s.replyTo = append(s.replyTo, k)
	s.cancelsBefore[b.Cid()] += s.cancelsLocked(b.Cid())
	s.mu.Unlock()
	if s.trickle > 0 {
		sendSlowly(s.h, p, reply, s.trickle)
		return
	}
	send(s.h, p, reply)
}

// connectScripted connects n to each of ps.
func (n *node) connectScripted(ctx context.Context, t testing.TB, ps ...*scripted) {
	t.Helper()
	for _, p := range ps {
		if err := n.h.Connect(ctx, p.info()); err != nil {
			t.Fatal(err)
		}
	}
}

// firstAbout returns the index of the first message with an entry for c,
// and that entry.
func (s *scripted) firstAbout(c cid.Cid) (int, bsmsg.Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, wl := range s.msgs {
		for _, e := range wl {
			if e.Cid.Equals(c) {
				return k, e, true
			}
		}
	}
	return 0, bsmsg.Entry{}, false
}

func (s *scripted) askedBlock(c cid.Cid) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[c]
}

func (s *scripted) cancelled(c cid.Cid) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancelsLocked(c) > 0
}

// awaitMessages waits until cond, checked after each message s receives,
// holds, or d has passed; it reports whether cond held.
func (s *scripted) awaitMessages(d time.Duration, cond func() bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for !cond() {
		select {
		case <-s.got:
		case <-t.C:
			return cond()
		}
	}
	return true
}

// cancelsLocked counts the cancels of c received. The caller holds mu.
func (s *scripted) cancelsLocked(c cid.Cid) int {
	n := 0
	for _, wl := range s.msgs {
		for _, e := range wl {
			if e.Cancel && e.Cid.Equals(c) {
				n++
			}
		}
	}
	return n
}

// smallAsset is a 100 KiB asset: one raw leaf, its own root.
func smallAsset(t testing.TB, seed uint64) (asset, blocks.Block) {
	t.Helper()
	a := makeAsset(t, seed, 100<<10)
	b, err := blocks.NewBlockWithCid(a.data, a.t.Cid)
	if err != nil || len(a.t.Nodes) != 0 {
		t.Fatalf("100 KiB asset is not one raw leaf: %v, %d nodes", err, len(a.t.Nodes))
	}
	return a, b
}

// TestFirstWantAsksForTheBlock: with a provider known and connected, the
// client asks it for the block at once, with a want-block (beside the
// want-have of bitswap's session, whose HAVE would bring the session's
// want-block a round trip and up to 20 ms later), and the block the
// provider sends in reply to it, once, is what the reader gets. In
// "no-haves" the provider never answers want-have, so without the
// want-block sent at once the fetch could not complete at all.
func TestFirstWantAsksForTheBlock(t *testing.T) {
	for _, noHaves := range []bool{false, true} {
		name := "haves"
		if noHaves {
			name = "no-haves"
		}
		t.Run(name, func(t *testing.T) { testFirstWant(t, noHaves) })
	}
}

func testFirstWant(t *testing.T, noHaves bool) {
	a, blk := smallAsset(t, 60)
	prov := newScripted(t, blk)
	prov.noHaves = noHaves
	cl := newNode(t, fetch.Config{PeerTimeout: time.Minute, Providers: providers{a.t.Cid: {prov.info()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.h.Connect(ctx, prov.info()); err != nil {
		t.Fatal(err)
	}
	r, err := cl.f.Open(ctx, a.t)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	checkBytes(t, readAll(t, r), a.data)

	k, e, ok := prov.firstAbout(a.t.Cid)
	if !ok {
		t.Fatalf("provider never asked about %s", a.t.Cid)
	}
	t.Logf("first entry about the content, in message %d: %+v", k, e)
	prov.mu.Lock()
	replyTo := append([]int(nil), prov.replyTo...)
	var answered []bsmsg.Entry
	if len(replyTo) > 0 {
		answered = prov.msgs[replyTo[0]]
	}
	prov.mu.Unlock()
	if len(replyTo) != 1 {
		t.Fatalf("provider sent the block %d times, want once", len(replyTo))
	}
	wb := false
	for _, x := range answered {
		wb = wb || x.Cid.Equals(a.t.Cid) && x.WantType == pb.Message_Wantlist_Block && x.SendDontHave && !x.Cancel
	}
	if !wb {
		t.Errorf("the block answered %+v, want a want-block with send-dont-have for %s", answered, a.t.Cid)
	}
	st := r.Stats()
	if st.PeerBytes != int64(len(a.data)) || st.Peers[prov.h.ID()] != int64(len(a.data)) || st.DuplicateBytes != 0 {
		t.Errorf("Stats = %+v, want all %d bytes from the provider, no duplicate", st, len(a.data))
	}
}

// TestFirstWantDialsProvider: the first want to a provider not connected
// yet dials it with the addresses the provider lookup gave. Here the host's
// Connect, which the Reader's own dial of the provider uses, never returns
// (a slow dial), and the provider never answers want-have: only the first
// want can fetch the block. Before, the provider's addresses reached the
// peerstore only inside that Connect, so the first want, sent meanwhile,
// failed with "no addresses", and a silent provider, never asked for an
// answer, was never penalised (TestSilentProviderAskedLate on a loaded
// machine).
func TestFirstWantDialsProvider(t *testing.T) {
	a, blk := smallAsset(t, 65)
	prov := newScripted(t, blk)
	prov.noHaves = true
	h := stuckConnect{Host: newHost(t), release: make(chan struct{})}
	defer close(h.release)
	cl := nodeOn(t, h, fetch.Config{PeerTimeout: time.Minute, Providers: providers{a.t.Cid: {prov.info()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cl.f.Open(ctx, a.t)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read from a provider dialled by the first want: %v", err)
	}
	checkBytes(t, got, a.data)
}

// stuckConnect is a host whose Connect waits for release (or its context)
// and does nothing: a dial that takes long.
type stuckConnect struct {
	host.Host
	release chan struct{}
}

func (h stuckConnect) Connect(ctx context.Context, _ peer.AddrInfo) error {
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return ctx.Err()
}

// TestFirstWantDuplicateCounted: the provider asked directly (it never
// answers want-have, so only the direct want asks it for the block) sends
// the block late, ignoring cancels, while another provider, asked by
// bitswap's session after its HAVE, sends it first. The reader gets the
// first copy, the late one is counted as a duplicate (reader and Fetcher),
// and the provider asked directly gets a cancel once the leaf is in.
func TestFirstWantDuplicateCounted(t *testing.T) {
	a, blk := smallAsset(t, 61)
	slow := newScripted(t, blk)
	slow.blockDelay = 500 * time.Millisecond
	slow.noHaves = true // so that the session asks the other provider
	fast := newNode(t, fetch.Config{})
	fast.hold(t, a)
	cl := newNode(t, fetch.Config{PeerTimeout: time.Minute,
		Providers: providers{a.t.Cid: {slow.info(), fast.info()}}})
	ctx := context.Background()
	for _, ai := range []peer.AddrInfo{slow.info(), fast.info()} {
		if err := cl.h.Connect(ctx, ai); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cl.f.Open(ctx, a.t)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	checkBytes(t, readAll(t, r), a.data)
	if !slow.askedBlock(a.t.Cid) {
		t.Fatalf("the first provider (which never answers want-have) got no want-block")
	}
	if st := r.Stats(); st.Peers[fast.h.ID()] != int64(len(a.data)) {
		t.Fatalf("Stats.Peers = %v, want all from the fast provider %s", st.Peers, fast.h.ID())
	}

	select {
	case <-slow.sent:
	case <-time.After(10 * time.Second):
		t.Fatal("slow provider never sent its block")
	}
	// Its copy is on the way; there is no event for its arrival: poll.
	n := int64(len(a.data))
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().DuplicateBytes != n || cl.f.Stats().DuplicateBytes != n {
		if time.Now().After(deadline) {
			t.Fatalf("DuplicateBytes: reader %d, Fetcher %d; want %d each", r.Stats().DuplicateBytes, cl.f.Stats().DuplicateBytes, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !slow.cancelled(a.t.Cid) {
		t.Errorf("the provider asked directly got no cancel after the leaf came from elsewhere")
	}
	if st := r.Stats(); st.PeerBytes != n {
		t.Errorf("PeerBytes = %d, want %d (the duplicate is not delivered)", st.PeerBytes, n)
	}
}

// TestFirstWantHedge: the provider asked directly is silent, or lacks the
// block (DONT_HAVE); the session's want-haves to the others are the hedge,
// and the fetch completes from the provider that has it, without the origin.
func TestFirstWantHedge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first func(t *testing.T) peer.AddrInfo
	}{
		{"silent", func(t *testing.T) peer.AddrInfo {
			h := silentPeer(t)
			return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}
		}},
		{"dont-have", func(t *testing.T) peer.AddrInfo { return newScripted(t).info() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := smallAsset(t, 62)
			first := tc.first(t)
			good := newNode(t, fetch.Config{})
			good.hold(t, a)
			o := newOrigin(t, a.data)
			cl := newNode(t, fetch.Config{PeerTimeout: time.Minute,
				Providers: providers{a.t.Cid: {first, good.info()}}})
			r := connectOpen(context.Background(), t, cl, a, o, first, good.info())
			checkBytes(t, readAll(t, r), a.data)
			st := r.Stats()
			if st.Peers[good.h.ID()] != int64(len(a.data)) || st.OriginBytes != 0 || o.sent.Load() != 0 {
				t.Errorf("Stats = %+v (origin sent %d), want all from %s", st, o.sent.Load(), good.h.ID())
			}
		})
	}
}

// TestRefusalWaitsForProviders: the provider asked directly says DONT_HAVE
// of the only leaf while the session's want-have to the other provider,
// which holds it, has yet to go out (its stream is held open here, as
// behind a busy message queue or on a loaded machine). The refusal is one
// provider's, not every provider's: the origin does not join, and the
// fetch, once the want-have goes out, takes everything from the holder.
// Before, the origin could join at the DONT_HAVE (every peer asked so far
// had refused), which made TestFirstWantHedge/dont-have flaky under load.
func TestRefusalWaitsForProviders(t *testing.T) {
	a, _ := smallAsset(t, 63)
	first := newScripted(t)
	good := newNode(t, fetch.Config{})
	good.hold(t, a)
	o := newOrigin(t, a.data)
	h := heldStreams{Host: newHost(t), to: good.h.ID(), release: make(chan struct{})}
	cl := nodeOn(t, h, fetch.Config{PeerTimeout: time.Minute,
		Providers: providers{a.t.Cid: {first.info(), good.info()}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := connectOpen(ctx, t, cl, a, o, first.info(), good.info())
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		got <- b
	}()
	// No event tells that the DONT_HAVE was taken in: poll.
	for !r.WaitsRefused() {
		if ctx.Err() != nil {
			t.Fatal("the reader never waited on a leaf a provider refused")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.JoinsRefused() {
		t.Errorf("the origin joins on one provider's DONT_HAVE while another, connected, has yet to be asked")
	}
	close(h.release)
	checkBytes(t, <-got, a.data)
	if st := r.Stats(); st.Peers[good.h.ID()] != int64(len(a.data)) || o.sent.Load() != 0 {
		t.Errorf("Stats = %+v (origin sent %d), want all from the provider holding it", st, o.sent.Load())
	}
}

// connectOpen connects cl to each of provs and opens a on it, with o as
// its origin; the Reader is closed when the test ends.
func connectOpen(ctx context.Context, t *testing.T, cl *node, a asset, o *origin, provs ...peer.AddrInfo) *fetch.Reader {
	t.Helper()
	for _, ai := range provs {
		if err := cl.h.Connect(ctx, ai); err != nil {
			t.Fatal(err)
		}
	}
	tg := a.t
	tg.URL = o.URL
	r, err := cl.f.Open(ctx, tg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// heldStreams is a host whose streams to one peer open once release is
// closed.
type heldStreams struct {
	host.Host
	to      peer.ID
	release chan struct{}
}

func (h heldStreams) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	if p == h.to {
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.Host.NewStream(ctx, p, pids...)
}

// TestFirstWantToHolderThatDelivered: of two connected providers, the
// first want goes to the one that has lately delivered blocks to this
// node, not to the one the provider table lists first (firstProvider).
func TestFirstWantToHolderThatDelivered(t *testing.T) {
	warm, wblk := smallAsset(t, 61)
	a, blk := smallAsset(t, 62)
	listed := newScripted(t, blk)
	served := newScripted(t, wblk, blk)
	listed.noHaves, served.noHaves = true, true // only the first want fetches
	cl := newNode(t, fetch.Config{PeerTimeout: time.Minute, Providers: providers{
		warm.t.Cid: {served.info()},
		a.t.Cid:    {listed.info(), served.info()},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl.connectScripted(ctx, t, listed, served)
	cl.fetchWhole(t, warm.t, warm.data) // served delivers to this node
	st := cl.fetchWhole(t, a.t, a.data)
	if !served.askedBlock(a.t.Cid) || listed.askedBlock(a.t.Cid) {
		t.Errorf("first want-block to the provider that had just delivered: %v, to the one listed first: %v; want true, false", served.askedBlock(a.t.Cid), listed.askedBlock(a.t.Cid))
	}
	if st.Peers[served.h.ID()] != int64(len(a.data)) {
		t.Errorf("Stats.Peers = %v, want every byte from the provider that had delivered", st.Peers)
	}
}
