package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// memOrigin is an http.RoundTripper that serves one file from memory, with
// Range support, so that an origin can live inside a synctest bubble.
type memOrigin struct {
	data  []byte
	delay time.Duration // per request, in the bubble's time
}

func (m memOrigin) RoundTrip(req *http.Request) (*http.Response, error) {
	if m.delay > 0 {
		select {
		case <-time.After(m.delay):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	rec := httptest.NewRecorder()
	http.ServeContent(rec, req, "file", modTime, bytes.NewReader(m.data))
	return rec.Result(), nil
}

// TestHedgeTiming checks the origin's timing in a synctest bubble, where
// time is exact: with no provider known the origin is asked at once; with a
// provider that never delivers, after exactly PeerTimeout.
func TestHedgeTiming(t *testing.T) {
	a := makeAsset(t, 60, 2*MiB+5)
	const originDelay = 30 * time.Millisecond
	for _, tc := range []struct {
		name     string
		provider bool
		want     time.Duration
	}{
		{"no provider", false, originDelay},
		{"unreachable provider", true, fetch.DefaultPeerTimeout + originDelay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := fetch.Config{HTTPClient: &http.Client{Transport: memOrigin{data: a.data, delay: originDelay}}}
				if tc.provider {
					// Known to hold it, but not reachable: peers get
					// PeerTimeout first.
					cfg.Providers = providers{a.t.Cid: {{ID: peer.ID("unreachable-provider")}}}
				}
				got, st, _, err := bubbleRead(t, context.Background(), cfg, a)
				if err != nil {
					t.Fatal(err)
				}
				checkBytes(t, got, a.data)
				if st.TTFB != tc.want {
					t.Errorf("TTFB = %v, want exactly %v", st.TTFB, tc.want)
				}
			})
		})
	}
}

// failingOrigin answers every request with 500.
type failingOrigin struct{}

func (failingOrigin) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	http.Error(rec, "down", http.StatusInternalServerError)
	return rec.Result(), nil
}

// TestStallTimeout: with the origin failing (500), a fetch that no peer is
// known to serve fails at once with ErrUnavailable; one with a provider
// known waits for it until exactly StallTimeout after the last block.
func TestStallTimeout(t *testing.T) {
	a := makeAsset(t, 61, 2*MiB)
	for _, tc := range []struct {
		name     string
		provider bool
		want     time.Duration
	}{
		{"no provider", false, 0},
		{"silent provider", true, fetch.DefaultStallTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := fetch.Config{HTTPClient: &http.Client{Transport: failingOrigin{}}}
				if tc.provider {
					cfg.Providers = providers{a.t.Cid: {{ID: peer.ID("unreachable-provider")}}}
				}
				_, s, d, err := bubbleRead(t, context.Background(), cfg, a)
				if !errors.Is(err, fetch.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("ReadAll = %v, want ErrUnavailable (and no timeout)", err)
				}
				if d != tc.want {
					t.Errorf("failed after %v, want exactly %v", d, tc.want)
				}
				if s.OriginErrors != 1 {
					t.Errorf("OriginErrors = %d, want 1 (a 500 makes the origin count as dead)", s.OriginErrors)
				}
			})
		})
	}
}

// TestStallAfterSleep: a fetch whose scheduling loop finds, 4 s in, that
// its wait ended 3 s after it was due (the process slept: wake.Late is 2 s)
// gives its sources StallTimeout from then: it fails 9 s in, not 5 s (it
// failed at the wake after any sleep longer than StallTimeout). A wait
// ended 1 s late is a loaded machine, not a sleep: 5 s.
func TestStallAfterSleep(t *testing.T) {
	a := makeAsset(t, 62, 2*MiB)
	for _, tc := range []struct {
		name string
		late time.Duration
		want time.Duration
	}{
		{"slept", 3 * time.Second, 4*time.Second + fetch.DefaultStallTimeout},
		{"loaded", time.Second, fetch.DefaultStallTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := fetch.Config{HTTPClient: &http.Client{Transport: failingOrigin{}}}
				cfg.Providers = providers{a.t.Cid: {{ID: peer.ID("unreachable-provider")}}}
				start := time.Now()
				r := bubbleOpen(t, context.Background(), cfg, a)
				go func() {
					time.Sleep(4 * time.Second)
					r.AfterWait(time.Now().Add(-tc.late), time.Now())
				}()
				_, err := io.ReadAll(r)
				if !errors.Is(err, fetch.ErrUnavailable) {
					t.Fatalf("ReadAll = %v, want ErrUnavailable", err)
				}
				if d := time.Since(start); d != tc.want {
					t.Errorf("failed after %v, want exactly %v", d, tc.want)
				}
			})
		})
	}
}

// bubbleRead opens a's content in a synctest bubble with a Fetcher of cfg
// on a bubbleNode (cfg's Host and Store are set), its origin at
// http://origin.invalid/file (cfg.HTTPClient answers), reads it to the end
// under ctx and returns what it read, the fetch's Stats, how long it took
// and the error.
func bubbleRead(t *testing.T, ctx context.Context, cfg fetch.Config, a asset) ([]byte, fetch.Stats, time.Duration, error) {
	t.Helper()
	start := time.Now()
	r := bubbleOpen(t, ctx, cfg, a)
	got, err := io.ReadAll(r)
	return got, r.Stats(), time.Since(start), err
}

// bubbleOpen opens a's content as bubbleRead does; the Reader and its
// Fetcher are closed when the test ends.
func bubbleOpen(t *testing.T, ctx context.Context, cfg fetch.Config, a asset) *fetch.Reader {
	t.Helper()
	cfg.Host, cfg.Store = bubbleNode(t)
	f, err := fetch.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	tg := a.t
	tg.URL = "http://origin.invalid/file"
	r, err := f.Open(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// bubbleNode makes a host without listeners or transports (no network
// inside a synctest bubble) and an in-memory store, both closed when the
// test ends.
func bubbleNode(t *testing.T) (host.Host, *store.Store) {
	t.Helper()
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.NoTransports, libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	st, err := store.New(store.Config{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return h, st
}
