package fetch

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/meshcdn/meshcdn/store"
)

// TestCloseWaitsForOpen closes a Fetcher while an Open is between
// registering its Reader and starting it: Close must not return before
// that Reader is started and stopped (its goroutines would otherwise start
// after Close, on a closed bitswap). Before, the Reader's Close waited on
// a count Open had not taken yet, and the Fetcher's Close returned at once.
func TestCloseWaitsForOpen(t *testing.T) {
	f := newMemFetcher(t, loopHost(t))
	closed := make(chan struct{})
	early := false
	testHookOpening = func(r *Reader) {
		if r.f != f {
			return
		}
		go func() { f.Close(); close(closed) }()
		<-r.ctx.Done() // the Close reached this Reader
		select {
		case <-closed:
			early = true
		case <-time.After(200 * time.Millisecond): // Close waits for Open, as it must
		}
	}
	defer func() { testHookOpening = nil }()
	leaf := testBlock(t, []byte("some leaf"))
	r, err := f.Open(context.Background(), Target{Cid: leaf.Cid(), Size: int64(len(leaf.RawData()))})
	if err == nil {
		r.Close()
	}
	<-closed
	if early {
		t.Error("Fetcher.Close returned while an Open was still starting its Reader")
	}
}

// newMemFetcher starts a Fetcher on h over a store in memory, which the
// test's cleanup closes; the caller closes the Fetcher.
func newMemFetcher(t *testing.T, h host.Host) *Fetcher {
	t.Helper()
	st, err := store.New(store.Config{InMemory: true, Quota: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f, err := New(Config{Host: h, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return f
}
