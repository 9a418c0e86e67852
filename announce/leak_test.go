package announce

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"go.uber.org/goleak"
	"sync/atomic"

	"github.com/meshcdn/meshcdn/store"
)

// TestCloseLeavesNothing starts two Announcers that create their own PubSub
// and DHT, makes them work (gossip, provides, a DHT lookup under way, a
// table subscription never cancelled) and checks that after Close no
// goroutine started since is left. It can fail: with a.wg.Wait() removed
// from shutdown it fails (Close returns while a loop is still inside the slow
// store), and so it does without a.psStop() (the created PubSub's
// goroutines are listed).
func TestCloseLeavesNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	n := newTestNet(t)
	hosts := [2]*tnode{{h: n.host()}, {h: n.host()}}
	var stores [2]*store.Store
	for i := range stores {
		st, err := store.New(store.Config{InMemory: true, Quota: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = st
	}
	// Everything before this point (hosts, stores) may stay.
	opts := goleak.IgnoreCurrent()

	// Node 0's store turns slow on request: Close must wait for a loop
	// that is inside it.
	slow := &slowHoldings{Holdings: stores[0], entered: make(chan struct{})}
	as := startLeakAnnouncers(t, hosts, [2]Holdings{slow, stores[1]})
	n.connect(hosts[0], hosts[1])
	root := importSeed(t, &tnode{st: stores[0]}, 7, 5000)
	awaitProvider(t, hosts[1], root, hosts[0].h.ID())
	_ = as[1].Table().Subscribe(context.Background()) // never cancelled
	lookup := as[1].Table().FindProvidersAsync(context.Background(), testCid(t, 0x55, "nobody has it"), 1)

	slow.armed.Store(true)
	<-slow.entered // a summary is reading the slow store
	closeWaitsForLoops(t, as, slow, root)
	for range lookup { // closed by Close
	}
	// 0. Close waited: right after it no goroutine runs code of this
	// package (other than the test's own).
	checkNoneOfOursRunning(t)
	// 1. With the hosts still up, nothing of ours is left. The PubSubs New
	// created stop asynchronously (go-libp2p-pubsub cannot be waited for):
	// goleak.Find retries for a while before failing. The host, not the
	// DHT, owns the handlers of inbound DHT streams (see IpfsDHT.Close);
	// they end with the connection, checked in 2. So does the host's
	// identify push that tells peers the protocols Close removed.
	if err := goleak.Find(opts,
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/protocol/identify.(*idService).loop.func1"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p-kad-dht.(*IpfsDHT).handleNewStream"),
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*stream).transport"),
	); err != nil {
		t.Fatalf("after Close, with the hosts up: %v", err)
	}
	// 2. With the hosts and stores closed too, nothing at all is left.
	for _, st := range stores {
		st.Close()
	}
	if err := n.mn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := goleak.Find(before); err != nil {
		t.Fatalf("after closing the hosts: %v", err)
	}
}

// startLeakAnnouncers starts an Announcer on each of hosts, with the
// matching holdings, creating its own PubSub and DHT (a DHT server), and
// summarising every 50 ms.
func startLeakAnnouncers(t *testing.T, hosts [2]*tnode, holdings [2]Holdings) [2]*Announcer {
	t.Helper()
	var as [2]*Announcer
	for i, nd := range hosts {
		a, err := New(Config{
			Name: "leak", Host: nd.h, Holdings: holdings[i],
			MDNS: Off, DHTMode: dht.ModeServer, SummaryInterval: 50 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		as[i] = a
		nd.a = a
	}
	return as
}

// closeWaitsForLoops closes each of as while a loop is inside slow, and
// checks that Close returned only after that loop left it, and that a
// second Close and an Announce of root after it fail with ErrClosed.
func closeWaitsForLoops(t *testing.T, as [2]*Announcer, slow *slowHoldings, root cid.Cid) {
	t.Helper()
	for _, a := range as {
		if err := a.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
		if !slow.exited.Load() {
			t.Fatal("Close returned while a loop was still inside Holdings.Roots")
		}
		if err := a.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("second Close = %v, want ErrClosed", err)
		}
		if err := a.Announce(context.Background(), root); !errors.Is(err, ErrClosed) {
			t.Fatalf("Announce after Close = %v, want ErrClosed", err)
		}
	}
}

// checkNoneOfOursRunning checks that no goroutine runs code of this
// package (other than the test's own). A loop that has called its
// WaitGroup's Done may still be returning from its function when Close
// returns, so the check allows 100 ms for that, far below any loop's
// period.
func checkNoneOfOursRunning(t *testing.T) {
	t.Helper()
	ours := ourGoroutines()
	for deadline := time.Now().Add(100 * time.Millisecond); len(ours) > 0 && time.Now().Before(deadline); ours = ourGoroutines() {
		runtime.Gosched()
	}
	if len(ours) > 0 {
		t.Fatalf("%d goroutines of package announce still running right after Close:\n%s", len(ours), strings.Join(ours, "\n\n"))
	}
}

// ourGoroutines returns the stacks of goroutines running code of this
// package, except those of tests.
func ourGoroutines() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var ours []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "meshcdn/meshcdn/announce.") && !strings.Contains(g, "testing.tRunner") {
			ours = append(ours, g)
		}
	}
	return ours
}

// slowHoldings makes one Roots call take 100 ms, like a store on a slow
// disk, once armed.
type slowHoldings struct {
	Holdings
	armed, exited atomic.Bool
	entered       chan struct{}
}

func (s *slowHoldings) Roots() []store.RootInfo {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		time.Sleep(100 * time.Millisecond) // the slow disk, not synchronisation
		defer s.exited.Store(true)
	}
	return s.Holdings.Roots()
}
