package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/meshcdn/meshcdn/announce"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/meshtest"
	"github.com/meshcdn/meshcdn/store"
)

// ScaleResult is the scale scenario's part of the report.
type ScaleResult struct {
	Peers                      int     `json:"peers"`
	RootsPerPeer               int     `json:"roots_per_peer"`
	Degree                     float64 `json:"mean_degree"`
	IdleSeconds                float64 `json:"idle_seconds"`
	AnnounceBytesPerSecPerPeer float64 `json:"announce_bytes_per_s_per_peer"`
	TableEntries               int     `json:"table_entries"`
	TableBytesPerEntry         float64 `json:"table_bytes_per_entry"`
	RootLearnedP50Ms           float64 `json:"root_learned_p50_ms"`
	RootLearnedMaxMs           float64 `json:"root_learned_max_ms"`
	Learned                    int     `json:"learned"`
	SettleSeconds              float64 `json:"settle_seconds"`
	Seconds                    float64 `json:"seconds"`
}

// scalePeer is one announcer on the mocknet.
type scalePeer struct {
	h  host.Host
	st *store.Store
	a  *announce.Announcer
	ps *pubsub.PubSub
}

const scaleRoots = 2

// runScale starts n announcers (gossip only, as in a LAN or one site's
// mesh) on a mocknet, connected in a ring plus three random chords each,
// each holding scaleRoots small roots (imported before the links, so that
// they spread in the summaries peers send when they meet); then measures idle announce traffic,
// the tables' memory and how long a new root takes to reach every table.
func runScale(ctx context.Context, o options, p *progress) (*ScaleResult, error) {
	start := time.Now()
	n := o.scaleN
	res := &ScaleResult{Peers: n, RootsPerPeer: scaleRoots}
	mn := mocknet.New()
	defer mn.Close()
	var sent atomic.Uint64
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	peers, err := startScalePeers(ctx, mn, n, &sent)
	defer func() {
		for _, sp := range peers {
			sp.a.Close()
			sp.st.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	for i, sp := range peers {
		for j := range scaleRoots {
			if _, err := sp.st.Import(ctx, bytes.NewReader(data(uint64(100_000+i*scaleRoots+j), 1024)), store.ImportOptions{}); err != nil {
				return nil, err
			}
		}
	}
	links, err := linkScalePeers(mn, peers, o.seed)
	if err != nil {
		return nil, err
	}
	res.Degree = 2 * float64(links) / float64(n)
	p.step("scale: %d announcers up and linked (mean degree %.1f)", n, res.Degree)
	// Let the imports' HAVEs spread and gossipsub's caches drain, then
	// measure an idle window.
	settled := settle(ctx, peers, o.scaleSettle)
	res.SettleSeconds = time.Since(start).Seconds()
	p.step("scale: tables settled (%v): %d entries, %d expected", settled, tableEntries(peers), n*(n-1)*scaleRoots)
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	res.TableEntries = tableEntries(peers)
	res.TableBytesPerEntry = float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(max(res.TableEntries, 1))
	p.step("scale: %d table entries in all; heap above start %.0f MiB (%.0f B per entry, everything included)",
		res.TableEntries, float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/mib, res.TableBytesPerEntry)
	window := o.scaleWindow
	s0 := sent.Load()
	time.Sleep(window) // the measurement window
	res.IdleSeconds = window.Seconds()
	res.AnnounceBytesPerSecPerPeer = float64(sent.Load()-s0) / float64(n) / window.Seconds()
	p.step("scale: idle announce traffic %.0f B/s sent per peer (as many received)", res.AnnounceBytesPerSecPerPeer)
	if err := learnRoot(ctx, peers, res); err != nil {
		return res, err
	}
	p.step("scale: a new root reached %d of %d peers within 30 s: p50 %.0f ms, last of them %.0f ms", res.Learned, n-1, res.RootLearnedP50Ms, res.RootLearnedMaxMs)
	var st announce.Stats
	for _, sp := range peers {
		s := sp.a.Stats()
		st.Received += s.Received
		st.Replayed += s.Replayed
		st.RateLimited += s.RateLimited
	}
	p.step("scale: messages accepted %d, ignored as replayed %d, as over the rate limit %d (all peers)", st.Received, st.Replayed, st.RateLimited)
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// settle waits until no table has added an entry for quiet (the summary
// floods of peers meeting have been absorbed) or every table lists every
// other peer's roots, at most 15 minutes; it reports which.
func settle(ctx context.Context, peers []*scalePeer, quiet time.Duration) string {
	want := len(peers) * (len(peers) - 1) * scaleRoots
	deadline := time.Now().Add(15 * time.Minute)
	var last uint64
	lastChange := time.Now()
	for {
		var added uint64
		for _, sp := range peers {
			added += sp.a.Table().Stats().Added
		}
		if added != last {
			last, lastChange = added, time.Now()
		}
		switch {
		case tableEntries(peers) >= want:
			return "complete"
		case time.Since(lastChange) >= quiet:
			return "quiet"
		case time.Now().After(deadline) || ctx.Err() != nil:
			return "gave up"
		}
		time.Sleep(time.Second) // polling: nothing reports a settled mesh
	}
}

func tableEntries(peers []*scalePeer) int {
	n := 0
	for _, sp := range peers {
		n += sp.a.Table().Stats().Entries
	}
	return n
}

// startScalePeers starts n announcers on mn. Their keys are Ed25519, as a
// mesh node's identity is: mocknet's GenPeer makes ECDSA P-256 keys, whose
// signatures cost about twice as much to check, and every peer checks every
// message's signature.
func startScalePeers(ctx context.Context, mn mocknet.Mocknet, n int, sent *atomic.Uint64) ([]*scalePeer, error) {
	var peers []*scalePeer
	for i := range n {
		key, _, err := crypto.GenerateEd25519Key(crand.Reader)
		if err != nil {
			return peers, err
		}
		h, err := mn.AddPeer(key, ma.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4242", i>>16&255, i>>8&255, i&255)))
		if err != nil {
			return peers, err
		}
		ps, err := pubsub.NewGossipSub(ctx, h, append(announce.PubSubOptions(), pubsub.WithRawTracer(&sizeTracer{sent}))...)
		if err != nil {
			return peers, err
		}
		st, err := store.New(store.Config{InMemory: true, Quota: 16 << 20})
		if err != nil {
			return peers, err
		}
		a, err := announce.New(announce.Config{Name: "bench-scale", Host: h, PubSub: ps, Holdings: st, DisableDHT: true, MDNS: announce.Off})
		if err != nil {
			st.Close()
			return peers, err
		}
		peers = append(peers, &scalePeer{h: h, st: st, a: a, ps: ps})
	}
	return peers, nil
}

// linkScalePeers connects a ring plus three random chords per peer.
func linkScalePeers(mn mocknet.Mocknet, peers []*scalePeer, seed uint64) (int, error) {
	rng := rand.New(rand.NewPCG(seed, 4))
	n := len(peers)
	done := map[[2]int]bool{}
	links := 0
	for i := range peers {
		for k := range 4 {
			j := (i + 1) % n
			if k > 0 {
				j = rng.IntN(n)
			}
			if i == j || done[[2]int{i, j}] || done[[2]int{j, i}] {
				continue
			}
			done[[2]int{i, j}] = true
			if _, err := mn.LinkPeers(peers[i].h.ID(), peers[j].h.ID()); err != nil {
				return links, err
			}
			if _, err := mn.ConnectPeers(peers[i].h.ID(), peers[j].h.ID()); err != nil {
				return links, err
			}
			links++
		}
	}
	return links, nil
}

// learnRoot imports a new root on peer 0 and waits (at most 30 s) until
// every other table lists it: each table is checked on every change it
// reports, and every 50 ms in case a change was dropped (a slow subscriber
// loses changes).
func learnRoot(ctx context.Context, peers []*scalePeer, res *ScaleResult) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	content := data(7_777_777, 2048)
	a, err := manifest.FromReader(ctx, bytes.NewReader(content))
	if err != nil {
		return err
	}
	learned := make(chan time.Time, len(peers))
	t0 := time.Now()
	var wg sync.WaitGroup
	for _, sp := range peers[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if at, ok := awaitRoot(ctx, sp.a.Table(), a.Cid); ok {
				learned <- at
			}
		}()
	}
	if _, err := peers[0].st.Import(ctx, bytes.NewReader(content), store.ImportOptions{}); err != nil {
		return err
	}
	wg.Wait()
	close(learned)
	var times []time.Duration
	for at := range learned {
		times = append(times, at.Sub(t0))
	}
	res.Learned = len(times)
	res.RootLearnedP50Ms = ms(meshtest.Percentile(times, 0.5))
	res.RootLearnedMaxMs = ms(meshtest.Percentile(times, 1))
	return nil // peers that did not learn it in time are a figure (Learned), not a failure
}

// awaitRoot waits until t lists a provider of root and says when.
func awaitRoot(ctx context.Context, t *announce.Table, root cid.Cid) (time.Time, bool) {
	changes := t.Subscribe(ctx)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if len(t.Providers(root, 1)) > 0 {
			return time.Now(), true
		}
		select {
		case <-changes:
		case <-tick.C:
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
}

// sizeTracer counts the bytes of the pubsub RPCs a peer sends (all topics:
// there is only the announce topic here).
type sizeTracer struct{ sent *atomic.Uint64 }

func (t *sizeTracer) SendRPC(rpc *pubsub.RPC, _ peer.ID) {
	n := proto.Size(&rpc.RPC)
	l := 1 // pubsub frames each RPC with a uvarint length
	for m := n; m >= 0x80; m >>= 7 {
		l++
	}
	t.sent.Add(uint64(n + l))
}

func (t *sizeTracer) RecvRPC(*pubsub.RPC)                                  {}
func (t *sizeTracer) Graft(peer.ID, string)                                {}
func (t *sizeTracer) Prune(peer.ID, string)                                {}
func (t *sizeTracer) AddPeer(peer.ID, protocol.ID)                         {}
func (t *sizeTracer) RemovePeer(peer.ID)                                   {}
func (t *sizeTracer) Join(string)                                          {}
func (t *sizeTracer) Leave(string)                                         {}
func (t *sizeTracer) ValidateMessage(*pubsub.Message)                      {}
func (t *sizeTracer) DeliverMessage(*pubsub.Message)                       {}
func (t *sizeTracer) RejectMessage(*pubsub.Message, string)                {}
func (t *sizeTracer) DuplicateMessage(*pubsub.Message)                     {}
func (t *sizeTracer) ThrottlePeer(peer.ID)                                 {}
func (t *sizeTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (t *sizeTracer) UndeliverableMessage(*pubsub.Message)                 {}
func (t *sizeTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t *sizeTracer) OnClosedOutboundStream(peer.ID)                       {}
func (t *sizeTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}

// data returns size bytes from a ChaCha8 generator keyed by seed.
func data(seed uint64, size int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, size)
	rand.NewChaCha8(key).Read(b)
	return b
}
