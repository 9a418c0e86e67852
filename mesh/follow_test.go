package mesh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
	"github.com/meshcdn/meshcdn/store"
)

// deploySite publishes a new version of the site on o: files (path to bytes)
// and its manifest, swapped together (see meshtest.Origin.SetSite).
func deploySite(t *testing.T, o *meshtest.Origin, files map[string][]byte) *manifest.Manifest {
	t.Helper()
	m, err := o.SetSite(files)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// counters returns the body bytes o has sent per path, for the paths it
// has sent any of.
func counters(o *meshtest.Origin) map[string]int64 {
	out := map[string]int64{}
	for p, ps := range o.Stats().Paths {
		if ps.Sent > 0 {
			out[p] = ps.Sent
		}
	}
	return out
}

// waitEvent waits for an event of kind on ch (failing on SiteFailed when
// kind is not SiteFailed).
func waitEvent(ctx context.Context, t *testing.T, ch <-chan mesh.SiteEvent, kind mesh.SiteEventKind) mesh.SiteEvent {
	t.Helper()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("events ended before %v", kind)
			}
			if ev.Kind == kind {
				return ev
			}
			if ev.Kind == mesh.SiteFailed {
				t.Fatalf("site event %v: %v", ev.Kind, ev.Err)
			}
		case <-ctx.Done():
			t.Fatalf("no %v event: %v", kind, ctx.Err())
		}
	}
}

// TestSiteUpdatesUnderQuota is the must-show 1: a site updated
// three times under a seed whose quota fits one version and a bit. After
// each deploy the seed holds and serves the whole version (an app with no
// origin fetches all of it from the seed), the store never holds more than
// its quota, exactly the current version is pinned, and the origin sent
// each changed file once (unchanged files not again).
func TestSiteUpdatesUnderQuota(t *testing.T) {
	const MiB = 1 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	file := func(seed uint64, size int64) []byte { return testutil.Bytes(seed, size) }
	versions := []map[string][]byte{
		{"index.html": file(1, 2000), "app.js": file(2, 3*MiB+5), "video.mp4": file(3, 2*MiB), "logo.png": file(4, 300<<10)},
		{"index.html": file(11, 2100), "app.js": file(12, 3*MiB+7), "video.mp4": file(3, 2*MiB), "logo.png": file(4, 300<<10)},
		{"index.html": file(21, 2200), "app.js": file(12, 3*MiB+7), "video.mp4": file(23, 2*MiB+1), "logo.png": file(4, 300<<10)},
		{"index.html": file(31, 1900), "app.js": file(32, 3*MiB+1), "video.mp4": file(33, 2*MiB-9), "new.css": file(34, 500<<10)},
	}
	const quota = 6*MiB + MiB/2 // the largest version is about 5.8 MiB
	site := meshtest.StartOrigin(t, meshtest.OriginConfig{})
	deploySite(t, site, versions[0])

	seed := newNode(t, mesh.Config{Role: mesh.RoleSeed, DataDir: t.TempDir(), Origin: site.URL(), Quota: quota})
	// The quota holds throughout: checked at every content event.
	overQuota, watchDone := watchQuota(ctx, seed, quota)
	defer func() { cancel(); watchDone() }()

	events := make(chan mesh.SiteEvent, 64)
	// What the origin sent is counted from before each version is seen:
	// the seed starts fetching as soon as it sees one.
	before := counters(site)
	f, err := seed.Follow(mesh.FollowConfig{URL: "manifest.json", Interval: time.Hour, OnEvent: func(ev mesh.SiteEvent) { events <- ev }})
	if err != nil {
		t.Fatal(err)
	}
	prev := map[string][]byte{}
	for v, files := range versions {
		if v > 0 {
			deploySite(t, site, files)
			f.Check()
		}
		up := waitEvent(ctx, t, events, mesh.SiteUpdated)
		pinned := waitEvent(ctx, t, events, mesh.SitePinned)
		m := pinned.Manifest
		if up.Manifest != m || len(m.Assets) != len(files) {
			t.Fatalf("version %d: updated to %p, pinned %p with %d assets", v, up.Manifest, m, len(m.Assets))
		}
		after := counters(site)
		checkOriginSentChanged(t, v, files, prev, before, after)
		before = after
		checkPinnedExactly(t, v, seed, m)
		checkAppFetchesFromSeed(ctx, t, v, seed, site, m, files, after)
		prev = files
		if u := seed.Store().Usage(); u.Used > quota {
			t.Errorf("version %d: store holds %d bytes, quota %d", v, u.Used, quota)
		}
	}
	select {
	case u := <-overQuota:
		t.Errorf("the store held %+v, over its quota", u)
	default:
	}
}

// watchQuota checks n's store usage against quota at every content event
// until ctx ends: overQuota receives a usage over it. done waits for the
// watch to end once ctx is cancelled.
func watchQuota(ctx context.Context, n *mesh.Node, quota int64) (overQuota <-chan store.Usage, done func()) {
	over := make(chan store.Usage, 1)
	evs := n.Store().Subscribe(ctx)
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for range evs {
			if u := n.Store().Usage(); u.Used > quota {
				select {
				case over <- u:
				default:
				}
			}
		}
	}()
	return over, watch.Wait
}

// checkOriginSentChanged checks that, for version v, the origin sent each
// changed file once and unchanged ones (as in prev) not at all, from the
// per-path counters before and after.
func checkOriginSentChanged(t *testing.T, v int, files, prev map[string][]byte, before, after map[string]int64) {
	t.Helper()
	for p, data := range files {
		sent := after[p] - before[p]
		want := int64(len(data))
		if bytes.Equal(prev[p], data) {
			want = 0
		}
		if sent != want {
			t.Errorf("version %d: the origin sent %d bytes of %s, want %d", v, sent, p, want)
		}
	}
}

// checkPinnedExactly checks that seed holds every asset of m and pins
// exactly those.
func checkPinnedExactly(t *testing.T, v int, seed *mesh.Node, m *manifest.Manifest) {
	t.Helper()
	want := map[string]bool{}
	for _, a := range m.Assets {
		want[a.Cid.String()] = true
	}
	for _, r := range seed.Store().Roots() {
		if r.Pinned != want[r.Cid.String()] {
			t.Errorf("version %d: root %s pinned=%v, want %v", v, r.Cid, r.Pinned, want[r.Cid.String()])
		}
		delete(want, r.Cid.String())
	}
	if len(want) != 0 {
		t.Errorf("version %d: %d assets not held", v, len(want))
	}
}

// checkAppFetchesFromSeed checks that the seed serves the whole version m:
// an app with no origin gets every byte of it from the seed, and site (whose
// counters were after) sends nothing meanwhile.
func checkAppFetchesFromSeed(ctx context.Context, t *testing.T, v int, seed *mesh.Node, site *meshtest.Origin, m *manifest.Manifest, files map[string][]byte, after map[string]int64) {
	t.Helper()
	app := newNode(t, mesh.Config{Bootstrap: []string{seed.Addrs()[0].String()}})
	if err := app.WaitPeers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, a := range m.Assets {
		r, _, err := app.OpenAsset(ctx, m, a.Path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		st := r.Stats()
		r.Close()
		if err != nil || !bytes.Equal(got, files[a.Path]) || st.PeerBytes != a.Size {
			t.Fatalf("version %d: app read %s: %d bytes (%d from peers), %v; want %d from the seed", v, a.Path, len(got), st.PeerBytes, err, a.Size)
		}
	}
	app.Close()
	if got := counters(site); fmt.Sprint(got) != fmt.Sprint(after) {
		t.Errorf("version %d: the origin sent %v during the app's fetch (before: %v)", v, got, after)
	}
}

// TestFollowSwapsGateway: an app following a site serves the new version
// from its gateway after a deploy, learns of it by event and by callback,
// and an unchanged manifest costs a 304.
func TestFollowSwapsGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	site := meshtest.StartOrigin(t, meshtest.OriginConfig{})
	deploySite(t, site, map[string][]byte{"index.html": []byte("<p>one")})
	app := newNode(t, mesh.Config{Origin: site.URL()})
	var mu sync.Mutex
	var kinds []mesh.SiteEventKind
	f, err := app.Follow(mesh.FollowConfig{URL: "manifest.json", Interval: time.Hour, OnEvent: func(ev mesh.SiteEvent) {
		mu.Lock()
		kinds = append(kinds, ev.Kind)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	events := f.Subscribe(ctx) // after the first version: sees the second
	g := app.Gateway(mesh.GatewayConfig{})
	f.Attach(g)
	gw := httptest.NewServer(g)
	defer gw.Close()
	get := func() string {
		resp, err := http.Get(gw.URL + "/index.html")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(); got != "<p>one" {
		t.Fatalf("gateway serves %q, want version one", got)
	}
	f.Check() // unchanged: a 304, no event
	// Check does not wait: a check not yet made when the site changes
	// would find the second version, and the one asked next would be
	// folded into it.
	waitFor(ctx, t, "a check answered 304", func() bool { return site.Stats().ManifestNotModified >= 1 })
	deploySite(t, site, map[string][]byte{"index.html": []byte("<p>two")})
	f.Check()
	ev := waitEvent(ctx, t, events, mesh.SiteUpdated)
	if ev.Previous == nil || ev.Manifest == ev.Previous || f.Manifest() != ev.Manifest {
		t.Errorf("event %+v, Manifest() %p", ev, f.Manifest())
	}
	if got := get(); got != "<p>two" {
		t.Errorf("gateway serves %q after the update, want version two", got)
	}
	mu.Lock()
	if len(kinds) != 2 || kinds[0] != mesh.SiteUpdated || kinds[1] != mesh.SiteUpdated {
		t.Errorf("OnEvent saw %v, want two updates", kinds)
	}
	mu.Unlock()
	notMod := site.Stats().ManifestNotModified
	if notMod < 1 {
		t.Errorf("the origin answered %d checks with 304, want at least 1", notMod)
	}
}

// TestLoadManifestHung: a manifest origin that accepts and never answers
// fails LoadManifest within ManifestTimeout with an error matching
// context.DeadlineExceeded, and the follower reports it and keeps going.
func TestLoadManifestHung(t *testing.T) {
	const timeout = 300 * time.Millisecond
	n := newNode(t, mesh.Config{Origin: hungOrigin(t), ManifestTimeout: timeout})
	start := time.Now()
	_, err := n.LoadManifest(context.Background(), "manifest.json")
	if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d < timeout || d > timeout+5*time.Second {
		t.Fatalf("LoadManifest = %v after %v, want DeadlineExceeded after %v", err, d, timeout)
	}
	events := make(chan mesh.SiteEvent, 1)
	f, err := n.Follow(mesh.FollowConfig{URL: "manifest.json", OnEvent: func(ev mesh.SiteEvent) {
		select {
		case events <- ev:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := waitEvent(ctx, t, events, mesh.SiteFailed)
	if !errors.Is(ev.Err, context.DeadlineExceeded) || ev.Manifest != nil {
		t.Errorf("event %+v, want a timeout and no version", ev)
	}
}

// TestFollowRestartUnpins: a seed that was down while the site changed
// unpins, after its restart on the same DataDir, what left the site, and
// keeps pinned (without fetching again) what stayed.
func TestFollowRestartUnpins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	site := meshtest.StartOrigin(t, meshtest.OriginConfig{})
	kept, gone, added := testutil.Bytes(1, 3000), testutil.Bytes(2, 4000), testutil.Bytes(3, 5000)
	deploySite(t, site, map[string][]byte{"kept.bin": kept, "gone.bin": gone})
	dir := t.TempDir()
	follow := func() (*mesh.Node, *manifest.Manifest) {
		n, err := mesh.New(ctx, mesh.Config{Name: "test-mesh", Role: mesh.RoleSeed, DataDir: dir, Origin: site.URL(),
			ListenAddrs: mesh.LoopbackAddrs(mesh.RoleSeed), MDNS: mesh.Off})
		if err != nil {
			t.Fatal(err)
		}
		events := make(chan mesh.SiteEvent, 8)
		if _, err := n.Follow(mesh.FollowConfig{URL: "manifest.json", OnEvent: func(ev mesh.SiteEvent) { events <- ev }}); err != nil {
			t.Fatal(err)
		}
		return n, waitEvent(ctx, t, events, mesh.SitePinned).Manifest
	}
	n, m1 := follow()
	n.Close()
	m2 := deploySite(t, site, map[string][]byte{"kept.bin": kept, "added.bin": added})
	before := counters(site)
	n, _ = follow()
	defer n.Close()
	pinned := map[string]bool{}
	for _, r := range n.Store().Roots() {
		pinned[r.Cid.String()] = r.Pinned
	}
	for _, tc := range []struct {
		m    *manifest.Manifest
		path string
		want bool
	}{{m1, "gone.bin", false}, {m2, "kept.bin", true}, {m2, "added.bin", true}} {
		a, _ := tc.m.Lookup(tc.path)
		if pinned[a.Cid.String()] != tc.want {
			t.Errorf("after the restart, %s pinned = %v, want %v", tc.path, pinned[a.Cid.String()], tc.want)
		}
	}
	if after := counters(site); after["kept.bin"] != before["kept.bin"] || after["added.bin"] != int64(len(added)) {
		t.Errorf("origin sent %v after the restart (before: %v): want added.bin once and kept.bin not again", after, before)
	}
}

// TestNodeOriginTimeouts: Config.OriginHeaderTimeout reaches the node's
// fetches: an asset whose origin hangs, with no peer, fails within it
// (plus slack) with an error matching context.DeadlineExceeded; one whose
// origin answers 404 fails at once with an error that does not.
func TestNodeOriginTimeouts(t *testing.T) {
	data := testutil.Bytes(7, 2<<20)
	a, err := manifest.FromReader(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	a.Path, a.Type = "a.bin", "application/octet-stream"
	m := &manifest.Manifest{Assets: []manifest.Asset{a}}
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	const timeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name     string
		origin   string
		deadline bool
	}{
		{"hung", hungOrigin(t), true},
		{"404", notFound.URL, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, mesh.Config{Origin: tc.origin, OriginHeaderTimeout: timeout})
			start := time.Now()
			r, _, err := n.OpenAsset(context.Background(), m, "a.bin")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			d := time.Since(start)
			if err == nil || len(got) != 0 || errors.Is(err, context.DeadlineExceeded) != tc.deadline {
				t.Fatalf("ReadAll = %d bytes, %v; want an error, matching DeadlineExceeded: %v", len(got), err, tc.deadline)
			}
			if (tc.deadline && d < timeout) || d > timeout+5*time.Second {
				t.Errorf("failed after %v, want about %v or less", d, timeout)
			}
		})
	}
}

// TestFollowAttachNil: Attach(nil) is ignored: the follower's next swap
// used to dereference it, a panic on the follower's goroutine that took
// the whole process down.
func TestFollowAttachNil(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 3000})
	n := newNode(t, mesh.Config{Origin: s.URL()})
	f, err := n.Follow(mesh.FollowConfig{URL: "manifest.json"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Attach(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.Wait(ctx); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	f.Attach(nil) // with a version in effect
}

// TestFollowerClosedSaysWho: a Follower closed with its node still
// running fails Wait and a second Close with an error matching ErrClosed
// that says the follower closed (it said "node closed"); with the node
// closed, it says that.
func TestFollowerClosedSaysWho(t *testing.T) {
	n := newNode(t, mesh.Config{Origin: "http://127.0.0.1:1"}) // never answers: no version
	ctx := context.Background()
	for _, closeNode := range []bool{false, true} {
		f, err := n.Follow(mesh.FollowConfig{URL: "manifest.json"})
		if err != nil {
			t.Fatal(err)
		}
		want := "follower closed"
		if closeNode {
			n.Close()
			want = "node closed"
		} else {
			f.Close()
		}
		if _, err := f.Wait(ctx); !errors.Is(err, mesh.ErrClosed) || !strings.Contains(err.Error(), want) {
			t.Errorf("node closed %v: Wait = %v, want ErrClosed saying %q", closeNode, err, want)
		}
		if err := f.Close(); !closeNode && (!errors.Is(err, mesh.ErrClosed) || !strings.Contains(err.Error(), want)) {
			t.Errorf("second Close = %v, want ErrClosed saying %q", err, want)
		}
	}
}

// TestFollowRejectsBadToggle: a FollowConfig Toggle other than Default, On
// and Off is refused with a *ConfigError naming it, as New does for
// Config's; Follow used to take it for Off.
func TestFollowRejectsBadToggle(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 3000})
	n := newNode(t, mesh.Config{Origin: s.URL()})
	for _, cfg := range []mesh.FollowConfig{
		{URL: "manifest.json", Pin: 2},
		{URL: "manifest.json", Seeds: -2},
	} {
		f, err := n.Follow(cfg)
		var ce *mesh.ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, mesh.ErrConfig) {
			if f != nil {
				f.Close()
			}
			t.Errorf("Follow(Pin %d, Seeds %d) = %v, want a *ConfigError", cfg.Pin, cfg.Seeds, err)
		}
	}
}

// TestFollowRetriesFirstLoad: a follower whose first manifest check fails
// (the origin down for a moment as the app starts) checks again within
// seconds, not at the next Interval (here an hour: Wait waited it out);
// a Wait that runs out while checks fail says why (it said only "context
// deadline exceeded").
func TestFollowRetriesFirstLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	site := meshtest.StartOrigin(t, meshtest.OriginConfig{})
	deploySite(t, site, map[string][]byte{"index.html": []byte("<p>one")})
	var asked atomic.Int64
	site.SetFault(func(r *http.Request) meshtest.Fault {
		if strings.HasSuffix(r.URL.Path, "manifest.json") && asked.Add(1) == 1 {
			return meshtest.Fault{Kind: meshtest.FaultStatus, Status: http.StatusInternalServerError}
		}
		return meshtest.Fault{}
	})
	app := newNode(t, mesh.Config{Origin: site.URL()})
	f, err := app.Follow(mesh.FollowConfig{URL: "manifest.json", Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if m, err := f.Wait(ctx); err != nil || m == nil {
		t.Fatalf("Wait after a failed first check = %v, %v; want the manifest within seconds", m, err)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("the origin was asked for the manifest %d times, want 2", n)
	}

	gone, err := app.Follow(mesh.FollowConfig{URL: "missing.json", Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancelShort()
	_, err = gone.Wait(short)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "404") {
		t.Errorf("Wait on a manifest the origin does not have = %v, want the deadline and the 404", err)
	}
}

// TestFollowRetry: the waits between failed first checks double from
// followRetryMin up to the interval.
func TestFollowRetry(t *testing.T) {
	for _, tc := range []struct {
		failed   int
		interval time.Duration
		want     time.Duration
	}{
		{0, time.Minute, time.Second},
		{1, time.Minute, 2 * time.Second},
		{5, time.Minute, 32 * time.Second},
		{6, time.Minute, time.Minute},
		{1000, time.Minute, time.Minute},
		{0, 500 * time.Millisecond, 500 * time.Millisecond},
	} {
		if got := mesh.FollowRetry(tc.failed, tc.interval); got != tc.want {
			t.Errorf("followRetry(%d, %v) = %v, want %v", tc.failed, tc.interval, got, tc.want)
		}
	}
}
