package mesh

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestWatchNetwork: the watcher calls changed at the first look after the
// machine's network changed, once per change; a look that fails or finds
// the same network calls nothing.
func TestWatchNetwork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		cur, fail := "wifi 10.0.0.5", false
		set := func(key string, f bool) {
			mu.Lock()
			cur, fail = key, f
			mu.Unlock()
		}
		read := func() (netState, error) {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return netState{}, errors.New("netlink: no answer")
			}
			return netState{key: cur}, nil
		}
		start := time.Now()
		var got []string
		var at []time.Duration
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			watchNetwork(ctx, read, 2*time.Second, func(st netState) {
				got = append(got, st.key)
				at = append(at, time.Since(start))
			})
		}()
		time.Sleep(5 * time.Second) // looks at 2 and 4 s: the same
		set("wifi 10.0.7.9", false)
		time.Sleep(2 * time.Second) // the look at 6 s sees it
		set("", true)
		time.Sleep(2 * time.Second) // 8 s: a failed look
		set("wifi 10.0.7.9", false)
		time.Sleep(2 * time.Second) // 10 s: the same again
		set("", false)              // offline: no interface up but loopback
		time.Sleep(2 * time.Second) // 12 s
		cancel()
		<-done
		want := []string{"wifi 10.0.7.9", ""}
		wantAt := []time.Duration{6 * time.Second, 12 * time.Second}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || at[0] != wantAt[0] || at[1] != wantAt[1] {
			t.Fatalf("changes %q at %v, want %q at %v", got, at, want, wantAt)
		}
	})
}

// TestRedialerFreshNetwork: a bootstrap connection that lasted less than
// Max and dropped waits a backoff before its redial, unless the machine's
// network changed (fresh): then it is redialled at once. A network change
// also starts the backoff of a peer that was down over from Min.
func TestRedialerFreshNetwork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f, kick, freshNet, done := startFreshRedialer(ctx)
		setFresh := func() { freshNet.Store(true) }
		time.Sleep(10 * time.Second)
		setFresh() // the network changed: the connection is closed
		f.set(true, false)
		kick <- struct{}{}
		synctest.Wait()
		if got := f.dialTimes(); len(got) != 2 || got[1] != 10*time.Second {
			t.Fatalf("a connection of 10 s closed by a network change: dials at %v, want one at 10 s", got)
		}
		// Offline: dials fail, the backoff grows (1, 2, 4, 8 s).
		f.set(false, false)
		kick <- struct{}{}
		time.Sleep(16 * time.Second)
		synctest.Wait()
		n := len(f.dialTimes())
		// Back online: the change is seen, the peer redialled at once.
		f.set(true, false)
		setFresh()
		kick <- struct{}{}
		synctest.Wait()
		if got := f.dialTimes(); len(got) != n+1 || !f.connected("") {
			t.Fatalf("the network came back at %v: dials at %v, want one at once that connects", time.Since(f.start), got)
		}
		cancel()
		<-done
	})
}

// TestRedialerFreshSeenAtTheDrop: a network change is noted before its
// connections close, and a kick that comes between (the keeper's kick
// buffer holds one, and the connection's own events kick it) finds the
// peer still connected: the change must still count when the drop is
// seen. The keeper took it up at that kick and counted the drop as a
// failure: the redial came a backoff later (a minute in
// TestNetworkChangeClosesConnectionsFromGoneAddresses; this was one path
// of its failures on a loaded machine, and another remains:
// docs/ci-history.md).
func TestRedialerFreshSeenAtTheDrop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f, kick, freshNet, done := startFreshRedialer(ctx)
		time.Sleep(10 * time.Second)
		freshNet.Store(true) // the network changed
		kick <- struct{}{}   // a kick while the connection is still up
		synctest.Wait()
		f.set(true, false) // its connections closed
		kick <- struct{}{}
		synctest.Wait()
		if got := f.dialTimes(); len(got) != 2 || got[1] != 10*time.Second {
			t.Fatalf("a connection closed by a network change after a kick: dials at %v, want one at 10 s", got)
		}
		cancel()
		<-done
	})
}

// startFreshRedialer runs a keeper's loop (in a synctest bubble) on a
// fake peer it connects at once, backoff 1 s to 1 min without jitter,
// kicked by kick, told of network changes by fresh (taken up when read);
// done closes when the loop ends with ctx.
func startFreshRedialer(ctx context.Context) (f *fakePeer, kick chan struct{}, fresh *atomic.Bool, done chan struct{}) {
	f = &fakePeer{start: time.Now(), up: true}
	kick, fresh, done = make(chan struct{}, 1), new(atomic.Bool), make(chan struct{})
	r := redialer{
		policy:    Backoff{Min: time.Second, Max: time.Minute},
		rand:      func() float64 { return 0 },
		target:    func() peer.AddrInfo { return peer.AddrInfo{ID: "seed"} },
		connected: f.connected,
		dial:      f.dial,
		report:    func(peer.ID, peerState, error) {},
		kick:      kick,
		fresh:     func() bool { return fresh.Swap(false) },
	}
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	synctest.Wait() // connected at 0
	return f, kick, fresh, done
}

// TestPingOn: a peer that runs ping answers on the connection probed; one
// that does not says so at once, which is an answer (the connection is
// alive), not a timeout.
func TestPingOn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pinger := rawHost(t, true)
	mute := rawHost(t, false)
	me := rawHost(t, true)
	for _, h := range []host.Host{pinger, mute} {
		if err := me.Connect(ctx, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pingOn(ctx, me.Network().ConnsToPeer(pinger.ID())[0]); err != nil {
		t.Errorf("ping of a peer that runs it: %v", err)
	}
	err := pingOn(ctx, me.Network().ConnsToPeer(mute.ID())[0])
	if err == nil || timedOut(err) {
		t.Errorf("ping of a peer without it: %v, want an error that is no timeout", err)
	}
}

// rawHost is a libp2p host on loopback TCP, with or without the ping
// protocol.
func rawHost(t *testing.T, withPing bool) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.Ping(withPing),
		libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestReadNetState: the machine's loopback address is listed, and the
// key, which says when the network changed, holds it.
func TestReadNetState(t *testing.T) {
	st, err := readNetState()
	if err != nil {
		t.Fatal(err)
	}
	if !st.addrs[netip.MustParseAddr("127.0.0.1")] {
		t.Fatalf("127.0.0.1 not among the machine's addresses %v", st.addrs)
	}
	again, err := readNetState()
	if err != nil {
		t.Fatal(err)
	}
	if st.key == "" || again.key != st.key {
		t.Fatalf("two reads of an unchanged network: %q, then %q", st.key, again.key)
	}
}
