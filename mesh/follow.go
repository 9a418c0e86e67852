package mesh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/store"
)

// FollowConfig configures Follow.
type FollowConfig struct {
	// URL is the site's manifest: an absolute URL, or a path relative to
	// Config.Origin such as "manifest.json". Required.
	URL string

	// Interval is how often the manifest is checked. Default
	// Config.FollowInterval (1 min for apps, 30 s for seeds); at least
	// MinFollowInterval.
	Interval time.Duration

	// Pin keeps the current version pinned (every asset fetched and
	// pinned) and unpins the content of versions that are gone. Default On
	// for seeds, Off for apps. The follower owns the pins it makes: with a
	// DataDir, the roots it pinned are saved there, so that a restart
	// unpins what left the site while the node was down.
	Pin Toggle

	// Seeds adds the seeds the manifest lists (its "seeds" field) to the
	// node's bootstrap peers, which are then kept connected (see
	// Node.SetBootstrap): an app finds the site's seeds, and follows their
	// changes, without a rebuild. The peers of Config.Bootstrap at Follow
	// stay in the set; entries that do not parse are skipped. Default On;
	// Off leaves the bootstrap peers alone.
	Seeds Toggle

	// OnEvent, if set, is called with every event, in order, from the
	// follower's goroutine with none of the node's locks held. It should
	// return promptly: the next check waits for it. Subscribe is the
	// alternative that never holds the follower up.
	OnEvent func(SiteEvent)
}

// SiteEventKind says what happened to a followed site.
type SiteEventKind int

const (
	// SiteUpdated: a new version is in effect (the first one too).
	// Gateways attached to the follower serve it already.
	SiteUpdated SiteEventKind = iota + 1
	// SitePinned: every asset of the version in effect is held and pinned
	// (only with FollowConfig.Pin).
	SitePinned
	// SiteFailed: loading the manifest or pinning failed (Err says why);
	// the version in effect stays, and the next check tries again.
	SiteFailed
)

// String returns the kind's name ("updated", ...).
func (k SiteEventKind) String() string {
	switch k {
	case SiteUpdated:
		return "updated"
	case SitePinned:
		return "pinned"
	case SiteFailed:
		return "failed"
	}
	return "unknown"
}

// SiteEvent tells what happened to a followed site.
type SiteEvent struct {
	Kind SiteEventKind
	// Manifest is the version in effect (nil if none has loaded yet);
	// Previous, for SiteUpdated, the version it replaced (nil at first).
	Manifest, Previous *manifest.Manifest
	// Unpinned counts the roots unpinned because they left the site (for
	// SiteUpdated, with Pin); Fetched the bytes fetched to pin the version
	// (for SitePinned), OriginBytes those of them from the origin.
	Unpinned             int
	Fetched, OriginBytes int64
	// Err is why a check failed (SiteFailed).
	Err error
	// Missed counts the events this subscriber lost, because its buffer was
	// full, just before this one.
	Missed int
}

// followBuffer is how many events wait for a slow subscriber before newer
// ones are lost (and counted in SiteEvent.Missed).
const followBuffer = 16

// Follower follows a site's manifest URL for a node: it checks it every
// Interval with If-None-Match (an origin that answers 304 costs nothing),
// checks each new version in full before it takes effect, swaps it in
// atomically (Manifest, and every attached Gateway), pins it on a seed,
// and tells the app (Subscribe, FollowConfig.OnEvent). A failed check
// keeps the version in effect; until a first version is in effect (and,
// with Pin, pinned whole), a failed check is followed by another after
// 1 s, doubling up to Interval. Make one with Node.Follow; it is safe for
// concurrent use and stops at Close or when the node closes.
//
// With Pin, a new version goes in this order: the roots that left the site
// are unpinned (they stay held, and served to peers still on the old
// version, until the store needs their room: least recently used first);
// the new version takes effect (gateways serve it at once, fetching what
// is not held yet from peers and the origin); then its assets not held are
// fetched and pinned, evicting the old content as they need room, so a
// quota that fits one version and a bit takes the redeploy. Content that
// both versions share stays pinned throughout and is not fetched again.
type Follower struct {
	n    *Node
	cfg  FollowConfig
	url  string
	pin  bool
	kick chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu       sync.Mutex
	cur      *manifest.Manifest
	first    chan struct{} // closed when the first version is in effect
	lastErr  error         // the last check's failure to load, nil after one that loaded
	gateways []*Gateway
	subs     map[*siteSub]struct{}

	// Owned by the follower's goroutine.
	baseSeeds []string // Config.Bootstrap at Follow; nil with Seeds Off
	seeds     string   // the manifest seeds in effect, joined
	etag      string
	body      [sha256.Size]byte
	pinned    map[string]cid.Cid // roots pinned for the site
	pinnedOK  bool               // the version in effect is pinned whole
}

type siteSub struct {
	ch     chan SiteEvent
	missed int
}

// Follow starts following the site whose manifest is at cfg.URL: the first
// check starts at once (Wait waits for its version). Close the Follower to
// stop; the node's Close stops it too.
func (n *Node) Follow(cfg FollowConfig) (*Follower, error) {
	if n.closed.Load() {
		return nil, ErrClosed
	}
	if cfg.URL == "" {
		return nil, fmt.Errorf("%w: FollowConfig.URL is required", ErrConfig)
	}
	u, err := n.manifestURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = n.cfg.FollowInterval
	}
	if cfg.Interval < MinFollowInterval {
		return nil, fmt.Errorf("%w: FollowConfig.Interval %v, under MinFollowInterval (%v)", ErrConfig, cfg.Interval, MinFollowInterval)
	}
	if err := checkToggle("FollowConfig.Pin", cfg.Pin); err != nil {
		return nil, err
	}
	if err := checkToggle("FollowConfig.Seeds", cfg.Seeds); err != nil {
		return nil, err
	}
	f := &Follower{n: n, cfg: cfg, url: u, kick: make(chan struct{}, 1), done: make(chan struct{}),
		first: make(chan struct{}), subs: make(map[*siteSub]struct{}), pinned: make(map[string]cid.Cid)}
	if cfg.Seeds != Off {
		f.baseSeeds = n.Config().Bootstrap
	}
	f.pin = cfg.Pin == On || (cfg.Pin == Default && n.cfg.Role == RoleSeed)
	if f.pin {
		f.loadPins()
	}
	f.ctx, f.cancel = context.WithCancel(n.ctx)
	if testHookFollowStarting != nil {
		testHookFollowStarting()
	}
	if !n.spawn(f.run) {
		f.cancel()
		return nil, ErrClosed
	}
	return f, nil
}

// Manifest returns the version in effect, or nil before the first one
// loaded. The manifest must not be modified.
func (f *Follower) Manifest() *manifest.Manifest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// Wait waits until a version is in effect and returns it, or fails when
// ctx ends or the follower stops first. Until the first version loads,
// the follower checks again 1 s after a failure, doubling to Interval; a
// Wait that ctx ends wraps the last check's error too (an HTTP 404, a
// refused connection).
func (f *Follower) Wait(ctx context.Context) (*manifest.Manifest, error) {
	select {
	case <-f.first:
		return f.Manifest(), nil
	case <-ctx.Done():
		f.mu.Lock()
		last := f.lastErr
		f.mu.Unlock()
		if last != nil {
			return nil, fmt.Errorf("mesh: follow %s: %w; the last check failed: %w", f.url, ctx.Err(), last)
		}
		return nil, fmt.Errorf("mesh: follow %s: %w", f.url, ctx.Err())
	case <-f.done:
		return nil, fmt.Errorf("mesh: follow %s: %w", f.url, f.closedErr())
	}
}

// errFollowerClosed is what a Follower closed on its own fails with: it
// matches ErrClosed, as the Follower's docs say, but does not say the
// node closed.
var errFollowerClosed error = followerClosed{}

type followerClosed struct{}

func (followerClosed) Error() string        { return "mesh: follower closed" }
func (followerClosed) Is(target error) bool { return target == ErrClosed }

// closedErr is why the follower stopped: its node closed, or it did.
func (f *Follower) closedErr() error {
	if f.n.closed.Load() {
		return ErrClosed
	}
	return errFollowerClosed
}

// Attach makes g serve the version in effect now and every later one:
// each swap calls g.SetManifest before SiteUpdated is sent. A nil g is
// ignored.
func (f *Follower) Attach(g *Gateway) {
	if g == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gateways = append(f.gateways, g)
	if f.cur != nil {
		g.SetManifest(f.cur)
	}
}

// Check asks for a check now rather than at the next Interval: call it
// when told of a deploy (a push from your backend). It does not wait.
func (f *Follower) Check() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Subscribe returns the follower's events until ctx ends or the follower
// stops, when the channel is closed. The follower never waits for a
// subscriber: when its buffer (16 events) is full, events are lost and the
// next one delivered says how many in Missed.
func (f *Follower) Subscribe(ctx context.Context) <-chan SiteEvent {
	sub := &siteSub{ch: make(chan SiteEvent, followBuffer)}
	f.mu.Lock()
	select {
	case <-f.done:
		f.mu.Unlock()
		close(sub.ch)
		return sub.ch
	default:
	}
	f.subs[sub] = struct{}{}
	f.mu.Unlock()
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[sub]; ok {
			delete(f.subs, sub)
			close(sub.ch)
		}
	})
	return sub.ch
}

// Close stops following and waits for the follower's goroutine (a pin
// under way is cancelled; what it fetched stays). The version in effect
// stays in the attached gateways. Later calls return an error wrapping
// ErrClosed.
func (f *Follower) Close() error {
	first := false
	f.once.Do(func() { first = true })
	if !first {
		return fmt.Errorf("mesh: follow %s: close: %w", f.url, errFollowerClosed)
	}
	f.cancel()
	<-f.done
	return nil
}

// testHookFollowStarting, if set, runs in Follow just before the
// follower's goroutine starts (a test closes the node there).
var testHookFollowStarting func()

func (f *Follower) run() {
	defer func() {
		f.mu.Lock()
		close(f.done)
		for sub := range f.subs {
			delete(f.subs, sub)
			close(sub.ch)
		}
		f.mu.Unlock()
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for failed := 0; ; {
		select {
		case <-f.ctx.Done():
			return
		case <-timer.C:
		case <-f.kick:
			timer.Stop()
		}
		f.check()
		if f.Manifest() != nil && (!f.pin || f.pinnedOK) { // a version in effect, pinned if asked
			failed = 0
			timer.Reset(f.cfg.Interval)
			continue
		}
		timer.Reset(followRetry(failed, f.cfg.Interval))
		failed++
	}
}

// followRetry is how long after its failed-th failure in a row (from 0)
// a follower with no version in effect, or whose pin of it failed, checks
// again: followRetryMin doubling, at most interval. An app started while
// its origin was down for a moment waited the whole Interval (a minute)
// for its first version.
func followRetry(failed int, interval time.Duration) time.Duration {
	d := followRetryMin
	for range min(failed, 30) {
		d *= 2
	}
	return min(d, interval)
}

// followRetryMin is the first wait of followRetry.
const followRetryMin = time.Second

// check loads the manifest; a new version is swapped in and, with Pin,
// the content that left is unpinned before the new version is pinned, so
// that a quota that fits one version (and a bit) takes the redeploy.
func (f *Follower) check() {
	m, etag, err := f.n.loadManifest(f.ctx, f.url, f.etag)
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
	if err != nil {
		if f.ctx.Err() == nil {
			f.emit(SiteEvent{Kind: SiteFailed, Manifest: f.Manifest(), Err: err})
		}
		return
	}
	if m != nil {
		data, _ := m.Marshal()
		if sum := sha256.Sum256(data); f.Manifest() == nil || sum != f.body {
			f.body = sum
			f.swap(m)
		}
		f.etag = etag
	}
	if f.pin && !f.pinnedOK {
		f.pinCurrent()
	}
}

// swap puts m in effect: unpins what left (with Pin), then sets m in the
// follower and every attached gateway, then tells.
func (f *Follower) swap(m *manifest.Manifest) {
	unpinned := 0
	if f.pin {
		unpinned = f.unpinGone(m)
		f.pinnedOK = false
	}
	f.mu.Lock()
	prev := f.cur
	f.cur = m
	gws := append([]*Gateway(nil), f.gateways...)
	f.mu.Unlock()
	for _, g := range gws {
		g.SetManifest(m)
	}
	f.useSeeds(m)
	f.n.log.Info("site version in effect", "url", f.url, "assets", len(m.Assets), "unpinned", unpinned)
	f.emit(SiteEvent{Kind: SiteUpdated, Manifest: m, Previous: prev, Unpinned: unpinned})
	if prev == nil {
		close(f.first) // after the event: a Subscribe after Wait sees only later ones
	}
}

// unpinGone unpins the roots pinned for the site that m no longer lists.
// Their content stays held, and served, until the store needs the room.
func (f *Follower) unpinGone(m *manifest.Manifest) int {
	keep := make(map[string]bool, len(m.Assets))
	for _, a := range m.Assets {
		keep[a.Cid.KeyString()] = true
	}
	n := 0
	for k, c := range f.pinned {
		if keep[k] {
			continue
		}
		err := f.n.store.Unpin(f.ctx, c)
		if err != nil && !errors.Is(err, store.ErrNotPinned) {
			f.n.log.Warn("unpin failed", "cid", c, "err", err)
			continue
		}
		delete(f.pinned, k)
		n++
	}
	f.savePins()
	return n
}

// pinCurrent pins the version in effect.
func (f *Follower) pinCurrent() {
	m := f.Manifest()
	tally, err := f.n.pin(f.ctx, m)
	for _, a := range m.Assets {
		if f.n.store.Holds(a.Cid) {
			f.pinned[a.Cid.KeyString()] = a.Cid // pinned, or about to be: unpinned later if it leaves
		}
	}
	f.savePins()
	if f.ctx.Err() != nil {
		return
	}
	if err != nil {
		f.emit(SiteEvent{Kind: SiteFailed, Manifest: m, Err: err})
		return
	}
	f.pinnedOK = true
	f.emit(SiteEvent{Kind: SitePinned, Manifest: m, Fetched: tally.fetched, OriginBytes: tally.origin})
}

// emit sends ev to every subscriber without waiting, then to OnEvent.
func (f *Follower) emit(ev SiteEvent) {
	f.mu.Lock()
	for sub := range f.subs {
		e := ev
		e.Missed = sub.missed
		select {
		case sub.ch <- e:
			sub.missed = 0
		default:
			sub.missed++
		}
	}
	f.mu.Unlock()
	if f.cfg.OnEvent != nil {
		f.cfg.OnEvent(ev)
	}
}

// pinsFile is where the roots pinned for the site are saved: DataDir/sites/
// and a hash of the manifest URL. "" without a DataDir.
func (f *Follower) pinsFile() string {
	if f.n.cfg.InMemory {
		return ""
	}
	sum := sha256.Sum256([]byte(f.url))
	return filepath.Join(f.n.cfg.DataDir, "sites", hex.EncodeToString(sum[:8])+".json")
}

func (f *Follower) loadPins() {
	name := f.pinsFile()
	if name == "" {
		return
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return
	}
	var roots []string
	if err := json.Unmarshal(data, &roots); err != nil {
		f.n.log.Warn("site pins unreadable", "err", err)
		return
	}
	for _, s := range roots {
		if c, err := cid.Decode(s); err == nil {
			f.pinned[c.KeyString()] = c
		}
	}
}

func (f *Follower) savePins() {
	name := f.pinsFile()
	if name == "" {
		return
	}
	roots := make([]string, 0, len(f.pinned))
	for _, c := range f.pinned {
		roots = append(roots, c.String())
	}
	data, _ := json.Marshal(roots)
	err := os.MkdirAll(filepath.Dir(name), 0o700)
	if err == nil {
		err = os.WriteFile(name+".tmp", data, 0o600)
	}
	if err == nil {
		err = os.Rename(name+".tmp", name)
	}
	if err != nil {
		f.n.log.Warn("site pins not saved", "err", err)
	}
}

// manifestURL resolves a manifest URL relative to Config.Origin.
func (n *Node) manifestURL(u string) (string, error) {
	if strings.Contains(u, "://") {
		return u, nil
	}
	if n.cfg.Origin == "" {
		return "", fmt.Errorf("mesh: manifest %q: relative URL and no Origin", u)
	}
	return strings.TrimSuffix(n.cfg.Origin, "/") + "/" + strings.TrimPrefix(u, "/"), nil
}

// loadManifest fetches and checks the manifest at u within
// Config.ManifestTimeout. With etag set it asks If-None-Match and returns
// a nil manifest if the origin answers 304. It returns the response's
// ETag.
func (n *Node) loadManifest(ctx context.Context, u, etag string) (*manifest.Manifest, string, error) {
	if n.closed.Load() {
		return nil, "", ErrClosed
	}
	u, err := n.manifestURL(u)
	if err != nil {
		return nil, "", err
	}
	// Close ends the request too: it went on to the timeout (or for ever
	// with none) after the node had closed.
	ctx, stop := n.untilClose(ctx)
	defer stop()
	if n.cfg.ManifestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, n.cfg.ManifestTimeout,
			fmt.Errorf("no manifest within %v: %w", n.cfg.ManifestTimeout, context.DeadlineExceeded))
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", fmt.Errorf("mesh: manifest: %w", err)
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("mesh: manifest %s: %w", u, timeoutCause(ctx, err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && etag != "":
		return nil, etag, nil
	case resp.StatusCode != http.StatusOK:
		return nil, "", fmt.Errorf("mesh: manifest %s: HTTP %s", u, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, manifest.MaxSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("mesh: manifest %s: %w", u, timeoutCause(ctx, err))
	}
	m, err := manifest.Read(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("mesh: manifest %s: %w", u, err)
	}
	return m, resp.Header.Get("Etag"), nil
}

// timeoutCause returns err, or the context's cause when its deadline is
// what ended the request (it matches context.DeadlineExceeded).
func timeoutCause(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return context.Cause(ctx)
	}
	return err
}

// useSeeds makes the node's bootstrap peers those it was configured with
// plus the seeds m lists, when those changed (FollowConfig.Seeds).
func (f *Follower) useSeeds(m *manifest.Manifest) {
	if f.cfg.Seeds == Off || strings.Join(m.Seeds, " ") == f.seeds {
		return
	}
	f.seeds = strings.Join(m.Seeds, " ")
	addrs := append([]string(nil), f.baseSeeds...)
	for _, s := range m.Seeds {
		if _, err := parsePeer(s); err != nil {
			f.n.log.Warn("manifest seed skipped", "url", f.url, "seed", s, "err", err)
			continue
		}
		addrs = append(addrs, s)
	}
	if err := f.n.SetBootstrap(addrs); err != nil {
		f.n.log.Warn("manifest seeds not used", "url", f.url, "err", err)
	}
}
