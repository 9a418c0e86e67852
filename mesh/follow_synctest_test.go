package mesh_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p"

	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// memSite is an http.RoundTripper serving an origin's handler in
// memory, so that a follower can run in a synctest bubble; with hang it
// answers nothing until the request ends.
type memSite struct {
	h    http.Handler
	mu   sync.Mutex
	hang bool
	fail int         // the first fail requests fail, as to an origin that is down
	at   []time.Time // when each request came
}

func (m *memSite) RoundTrip(req *http.Request) (*http.Response, error) {
	m.mu.Lock()
	m.at = append(m.at, time.Now())
	hang, down := m.hang, len(m.at) <= m.fail
	m.mu.Unlock()
	if down {
		return nil, errors.New("connection refused")
	}
	if hang {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	rec := httptest.NewRecorder()
	m.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// bubbleNode starts, in a synctest bubble, a node with no network whose
// HTTP requests go to tr.
func bubbleNode(t *testing.T, tr http.RoundTripper) *mesh.Node {
	t.Helper()
	n, err := mesh.New(context.Background(), mesh.Config{Name: "test-mesh", InMemory: true, Origin: "http://origin.invalid",
		MDNS: mesh.Off, NATPortMap: mesh.Off, DisableDHT: true, HTTPClient: &http.Client{Transport: tr},
		Libp2pOptions: []libp2p.Option{libp2p.NoListenAddrs, libp2p.NoTransports}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFollowTiming checks the follower's timing in a synctest bubble, where
// time is exact: an app checks at once and then every FollowInterval (1 min
// by default), a change is seen at the next check, and a manifest origin
// that hangs fails the check after exactly ManifestTimeout (30 s by
// default), the version in effect staying.
func TestFollowTiming(t *testing.T) {
	// Made outside the bubble: its listener's goroutine is not the
	// bubble's; inside, requests reach it in memory.
	site := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: meshtest.Site{"index.html": []byte("one")}})
	synctest.Test(t, func(t *testing.T) {
		tr := &memSite{h: site}
		n := bubbleNode(t, tr)
		defer n.Close()
		events := make(chan mesh.SiteEvent, 16)
		start := time.Now()
		f, err := n.Follow(mesh.FollowConfig{URL: "manifest.json", OnEvent: func(ev mesh.SiteEvent) { events <- ev }})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		next := func() (mesh.SiteEvent, time.Duration) {
			ev := <-events
			return ev, time.Since(start)
		}
		if ev, d := next(); ev.Kind != mesh.SiteUpdated || d != 0 {
			t.Errorf("first event %v after %v, want an update at once", ev.Kind, d)
		}
		// Unchanged at 1 min and 2 min (304s); the deploy is seen at 3 min.
		time.Sleep(2*time.Minute + 30*time.Second)
		deploySite(t, site, map[string][]byte{"index.html": []byte("two")})
		if ev, d := next(); ev.Kind != mesh.SiteUpdated || d != 3*time.Minute {
			t.Errorf("second event %v after %v, want an update at 3m", ev.Kind, d)
		}
		tr.mu.Lock()
		at := append([]time.Time(nil), tr.at...)
		tr.hang = true
		tr.mu.Unlock()
		for i, a := range at {
			if d := a.Sub(start); d != time.Duration(i)*time.Minute {
				t.Errorf("check %d at %v, want %v", i, d, time.Duration(i)*time.Minute)
			}
		}
		ev, d := next()
		if ev.Kind != mesh.SiteFailed || !errors.Is(ev.Err, context.DeadlineExceeded) || d != 4*time.Minute+30*time.Second {
			t.Errorf("third event %v (%v) after %v, want a timeout at 4m30s", ev.Kind, ev.Err, d)
		}
		if ev.Manifest == nil || f.Manifest() != ev.Manifest {
			t.Error("the version in effect did not stay after a failed check")
		}
		f.Close()
		n.Close()
	})
}

// TestFollowFirstRetryTiming: a follower whose first checks fail (the
// origin down as the app starts) checks again after 1 s, 2 s, 4 s, and once
// a version is in effect, every Interval again.
func TestFollowFirstRetryTiming(t *testing.T) {
	site := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: meshtest.Site{"index.html": []byte("one")}})
	synctest.Test(t, func(t *testing.T) {
		tr := &memSite{h: site, fail: 3}
		n := bubbleNode(t, tr)
		defer n.Close()
		start := time.Now()
		f, err := n.Follow(mesh.FollowConfig{URL: "manifest.json"})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute + time.Second)
		tr.mu.Lock()
		at := append([]time.Time(nil), tr.at...)
		tr.mu.Unlock()
		want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second, 7*time.Second + time.Minute}
		if len(at) != len(want) {
			t.Fatalf("%d checks in the first %v, want %d", len(at), time.Since(start), len(want))
		}
		for i, a := range at {
			if d := a.Sub(start); d != want[i] {
				t.Errorf("check %d at %v, want %v", i, d, want[i])
			}
		}
		f.Close()
		n.Close()
	})
}
