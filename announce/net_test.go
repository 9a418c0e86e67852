package announce

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/protobuf/proto"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/store"
)

// tracer is a pubsub.RawTracer that reports rejected and delivered
// messages, counts RPC bytes and tracks the mesh size of one topic.
type tracer struct {
	topic     string
	rejects   chan string // reasons, dropped when full
	delivered chan *pubsub.Message
	sent      atomic.Uint64
	recv      atomic.Uint64
	mesh      atomic.Int64
}

func newTracer(topic string) *tracer {
	return &tracer{topic: topic, rejects: make(chan string, 4096), delivered: make(chan *pubsub.Message, 4096)}
}

func (tr *tracer) RejectMessage(msg *pubsub.Message, reason string) {
	if msg.GetTopic() != tr.topic {
		return
	}
	select {
	case tr.rejects <- reason:
	default:
	}
}

func (tr *tracer) DeliverMessage(msg *pubsub.Message) {
	if msg.GetTopic() != tr.topic {
		return
	}
	select {
	case tr.delivered <- msg:
	default:
	}
}

func rpcSize(rpc *pubsub.RPC) uint64 {
	n := proto.Size(&rpc.RPC)
	return uint64(n + varintLen(n)) // pubsub frames each RPC with a uvarint length
}

func varintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

func (tr *tracer) SendRPC(rpc *pubsub.RPC, _ peer.ID) { tr.sent.Add(rpcSize(rpc)) }
func (tr *tracer) RecvRPC(rpc *pubsub.RPC)            { tr.recv.Add(rpcSize(rpc)) }
func (tr *tracer) Graft(_ peer.ID, topic string) {
	if topic == tr.topic {
		tr.mesh.Add(1)
	}
}
func (tr *tracer) Prune(_ peer.ID, topic string) {
	if topic == tr.topic {
		tr.mesh.Add(-1)
	}
}
func (tr *tracer) AddPeer(peer.ID, protocol.ID)                         {}
func (tr *tracer) RemovePeer(peer.ID)                                   {}
func (tr *tracer) Join(string)                                          {}
func (tr *tracer) Leave(string)                                         {}
func (tr *tracer) ValidateMessage(*pubsub.Message)                      {}
func (tr *tracer) DuplicateMessage(*pubsub.Message)                     {}
func (tr *tracer) ThrottlePeer(peer.ID)                                 {}
func (tr *tracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (tr *tracer) UndeliverableMessage(*pubsub.Message)                 {}
func (tr *tracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (tr *tracer) OnClosedOutboundStream(peer.ID)                       {}
func (tr *tracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}

// awaitReject waits for a rejected message and returns its reason.
func (tr *tracer) awaitReject(t testing.TB) string {
	t.Helper()
	select {
	case r := <-tr.rejects:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no message was rejected within 10 s")
		return ""
	}
}

type tnode struct {
	h  host.Host
	ps *pubsub.PubSub
	tr *tracer
	st *store.Store
	d  *dht.IpfsDHT
	a  *Announcer
}

type nodeOpts struct {
	name    string          // mesh name; default "test"
	psOpts  []pubsub.Option // added to PubSubOptions
	dht     bool            // give the node a DHT in server mode
	noStore bool
	quota   int64
	cfg     func(*Config)
}

type testNet struct {
	t  testing.TB
	mn mocknet.Mocknet
}

func newTestNet(t testing.TB) *testNet {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	return &testNet{t: t, mn: mn}
}

// host adds a host linked to every other host of the net.
func (n *testNet) host() host.Host {
	n.t.Helper()
	h, err := n.mn.GenPeer()
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.mn.LinkAll(); err != nil {
		n.t.Fatal(err)
	}
	return h
}

// pubsub starts a gossipsub on h with PubSubOptions, a tracer of the mesh's
// topic and opts, stopped at cleanup.
func (n *testNet) pubsub(h host.Host, name string, opts ...pubsub.Option) (*pubsub.PubSub, *tracer) {
	n.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n.t.Cleanup(cancel)
	tr := newTracer(Topic(name))
	all := append(PubSubOptions(), pubsub.WithRawTracer(tr))
	ps, err := pubsub.NewGossipSub(ctx, h, append(all, opts...)...)
	if err != nil {
		n.t.Fatal(err)
	}
	return ps, tr
}

func (n *testNet) dht(h host.Host, name string) *dht.IpfsDHT {
	n.t.Helper()
	d, err := dht.New(h, DHTOptions(name, dht.ModeServer)...)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { d.Close() })
	return d
}

func (n *testNet) node(o nodeOpts) *tnode {
	n.t.Helper()
	if o.name == "" {
		o.name = "test"
	}
	nd := &tnode{h: n.host()}
	return n.start(nd, o)
}

// start runs an Announcer (and what it needs) on nd.h.
func (n *testNet) start(nd *tnode, o nodeOpts) *tnode {
	n.t.Helper()
	t := n.t
	if o.name == "" {
		o.name = "test"
	}
	if nd.ps == nil {
		nd.ps, nd.tr = n.pubsub(nd.h, o.name, o.psOpts...)
	}
	cfg := Config{
		Name:            o.name,
		Host:            nd.h,
		PubSub:          nd.ps,
		DisableDHT:      !o.dht,
		MDNS:            Off,
		SummaryInterval: time.Hour, // tests that want summaries say so
	}
	if o.dht {
		nd.d = n.dht(nd.h, o.name)
		cfg.DHT = nd.d
	}
	if !o.noStore {
		quota := o.quota
		if quota == 0 {
			quota = 1 << 20
		}
		st, err := store.New(store.Config{InMemory: true, Quota: quota})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		nd.st = st
		cfg.Holdings = st
	}
	if os.Getenv("MESHCDN_TEST_LOG") != "" {
		cfg.Logger = failureLog(t, nd.h.ID().String()[len(nd.h.ID().String())-6:])
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	t.Cleanup(func() { a.Close() })
	nd.a = a
	return nd
}

func (n *testNet) connect(a, b *tnode) {
	n.t.Helper()
	if _, err := n.mn.ConnectPeers(a.h.ID(), b.h.ID()); err != nil {
		n.t.Fatal(err)
	}
}

// importSeed imports size deterministic bytes into nd's store.
func importSeed(t testing.TB, nd *tnode, seed uint64, size int64) cid.Cid {
	t.Helper()
	c, err := nd.st.Import(context.Background(), testutil.Reader(seed, size), store.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Root
}

// awaitProvider waits until nd's table lists p for root.
func awaitProvider(t testing.TB, nd *tnode, root cid.Cid, p peer.ID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := nd.a.Table().Subscribe(ctx)
	if hasProvider(nd, root, p) {
		return
	}
	for ch := range sub {
		if ch.Added && ch.Root == root && ch.Peer == p {
			return
		}
	}
	t.Fatalf("%s: table never listed %s for %s", nd.h.ID(), p, root)
}

// awaitGone waits until nd's table no longer lists p for root.
func awaitGone(t testing.TB, nd *tnode, root cid.Cid, p peer.ID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := nd.a.Table().Subscribe(ctx)
	if !hasProvider(nd, root, p) {
		return
	}
	for ch := range sub {
		if !ch.Added && ch.Root == root && ch.Peer == p {
			return
		}
	}
	t.Fatalf("%s: table still lists %s for %s", nd.h.ID(), p, root)
}

func hasProvider(nd *tnode, root cid.Cid, p peer.ID) bool {
	for _, q := range nd.a.Table().Providers(root, 0) {
		if q == p {
			return true
		}
	}
	return false
}

// awaitTopicPeers polls (nothing can be awaited) until every node sees n
// peers on its topic.
func awaitTopicPeers(t testing.TB, want int, nodes ...*tnode) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, nd := range nodes {
		for len(nd.ps.ListPeers(nd.a.Topic())) < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d topic peers, want %d", nd.h.ID(), len(nd.ps.ListPeers(nd.a.Topic())), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// awaitMesh polls (the mesh forms at heartbeats; nothing reports it but
// the tracer's count) until every node has at least want(i) peers in its
// gossipsub mesh for the topic. A message that a peer receives before its
// mesh forms is forwarded to nobody, and gossip (IHAVE) goes only to peers
// outside the mesh: tests that need multi-hop delivery of a message published
// right away wait for this first.
func awaitMesh(t testing.TB, nodes []*tnode, want func(i int) int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i, nd := range nodes {
		for nd.tr.mesh.Load() < int64(want(i)) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d has %d mesh peers, want %d", i, nd.tr.mesh.Load(), want(i))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// rawTopic joins the mesh's topic on a bare pubsub (an attacker's) and
// waits until it sees want subscribers.
func rawTopic(t testing.TB, ps *pubsub.PubSub, name string, want int) *pubsub.Topic {
	t.Helper()
	tp, err := ps.Join(Topic(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for len(tp.ListPeers()) < want {
		if time.Now().After(deadline) {
			t.Fatalf("attacker sees %d subscribers, want %d", len(tp.ListPeers()), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return tp
}

// failureLog is a debug logger whose lines the test prints if it fails
// (MESHCDN_TEST_LOG=1: for chasing a flake).
func failureLog(t testing.TB, name string) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("log of %s:\n%s", name, buf.String())
			mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
