package meshtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
)

// CrowdConfig configures a Crowd. Origin is required; every other zero
// field means the default stated beside it.
type CrowdConfig struct {
	// Origin serves the site every node fetches; each node's
	// mesh.Config.Origin is its URL.
	Origin *Origin

	// Seeds is the number of seed nodes, started first; each pins the
	// whole site before any app arrives. Default 0.
	Seeds int

	// Apps is the number of app nodes in the crowd. Default 0.
	Apps int

	// Seed and App are the templates of the seeds' and the apps' configs.
	// The crowd sets Role, Origin and Bootstrap, and applies LocalConfig
	// (loopback, mDNS off, InMemory unless Badger); other fields are kept.
	// A Logger's records carry the node's name (node=seed-1, app-07, ...),
	// so that one log can hold the whole crowd's.
	Seed, App mesh.Config

	// Badger puts every node's store on badger, each in its own directory
	// under a temporary directory that Close removes. Default false:
	// InMemory.
	Badger bool

	// Arrival is the apps' schedule. Default AtOnce().
	Arrival Arrival

	// Assets are the paths every node fetches, in this order, one after
	// another (see Together). Default every asset of the manifest, in
	// manifest order.
	Assets []string

	// Together makes an app fetch its first asset, then all the others at
	// once, as a browser loads a page and then the resources it names.
	// Default false: one after another.
	Together bool

	// AppAssets, if set, gives app i (0 for the first to arrive) its own
	// list of paths to fetch instead of Assets: a long tail of popularity.
	// Default nil.
	AppAssets func(i int) []string

	// Neighbours is how many other apps an arriving app connects to,
	// chosen at random among the apps that arrived before it (as a LAN's
	// mDNS or a tracker would tell it of), besides the seeds: those started
	// are its bootstrap peers, the others it dials once they have started.
	// An app with fewer apps before it also dials apps that finished
	// starting while it started, so that apps arriving together form one
	// mesh. Default 3; negative: none.
	Neighbours int

	// WaitProvider is how long an arriving app that has a peer waits for
	// the peer to connect and for an announcement of a holder of the last
	// asset it will fetch, before it starts fetching: an app joins the
	// mesh when it starts and loads the site a moment later. Default 1 s;
	// negative: no wait.
	WaitProvider time.Duration

	// Rand seeds the choice of neighbours, so that a run can be repeated.
	// Default 0.
	Rand uint64
}

// Crowd is a mesh of nodes on this machine fetching one site: seeds that
// pin it, then app nodes arriving on a schedule. Make one with NewCrowd, run
// it once with Run, read Report at any time (also while it runs) and Close
// it. A Crowd is safe for concurrent use.
type Crowd struct {
	cfg   CrowdConfig
	m     *manifest.Manifest
	dir   string
	start time.Time
	sent0 int64 // what the origin had sent before Run

	mu      sync.Mutex
	members []*member
	phase   time.Duration // when the apps' phase started, from start
	sentApp int64         // what the origin had sent then
	end     time.Duration
	ran     bool
	closed  bool
}

// member is one node of the crowd and its fetches.
type member struct {
	name    string
	role    mesh.Role
	node    *mesh.Node
	arrival time.Duration
	mu      sync.Mutex
	fetches []FetchReport
	done    time.Duration // when its last fetch ended, from the crowd's start; 0 until then
}

// NewCrowd checks cfg and prepares a crowd; no node starts before Run.
func NewCrowd(cfg CrowdConfig) (*Crowd, error) {
	if cfg.Origin == nil {
		return nil, errors.New("meshtest: crowd: no Origin")
	}
	if cfg.Seeds < 0 || cfg.Apps < 0 {
		return nil, errors.New("meshtest: crowd: negative node count")
	}
	if cfg.Arrival == nil {
		cfg.Arrival = AtOnce()
	}
	if cfg.Neighbours == 0 {
		cfg.Neighbours = 3
	}
	if cfg.WaitProvider == 0 {
		cfg.WaitProvider = time.Second
	}
	m := cfg.Origin.Manifest()
	if cfg.Assets == nil {
		for _, a := range m.Assets {
			cfg.Assets = append(cfg.Assets, a.Path)
		}
	}
	for _, p := range cfg.Assets {
		if _, ok := m.Lookup(p); !ok {
			return nil, fmt.Errorf("meshtest: crowd: %s: %w", p, mesh.ErrNotInManifest)
		}
	}
	c := &Crowd{cfg: cfg, m: m}
	if cfg.Badger {
		dir, err := os.MkdirTemp("", "meshtest-crowd-")
		if err != nil {
			return nil, fmt.Errorf("meshtest: crowd: %w", err)
		}
		c.dir = dir
	}
	return c, nil
}

// Nodes returns the crowd's nodes started so far: seeds first, then apps
// in the order they were made. Do not close them: Close does.
func (c *Crowd) Nodes() []*mesh.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	ns := make([]*mesh.Node, len(c.members))
	for i, mb := range c.members {
		ns[i] = mb.node
	}
	return ns
}

// Run starts the seeds, which each fetch every asset and pin the site; then
// the apps arrive on the schedule. An arriving app starts (mesh.New,
// bootstrapped to the seeds and to Neighbours apps arrived before it),
// waits up to WaitProvider to hear of a holder, and fetches Assets in order,
// checking every byte against the site. Run returns when every app is done
// or ctx ends, with the Report and the errors of failed fetches joined. The
// nodes stay up until Close. Run may be called once.
func (c *Crowd) Run(ctx context.Context) (*Report, error) {
	c.mu.Lock()
	if c.ran || c.closed {
		c.mu.Unlock()
		return nil, errors.New("meshtest: crowd: Run called twice or after Close")
	}
	c.ran = true
	c.start = time.Now()
	c.sent0 = c.cfg.Origin.Sent()
	c.mu.Unlock()
	seeds, err := c.startSeeds(ctx)
	if err != nil {
		return c.Report(), err
	}
	c.mu.Lock()
	c.phase = time.Since(c.start)
	c.sentApp = c.cfg.Origin.Sent()
	c.mu.Unlock()
	err = c.arrive(ctx, seeds)
	c.mu.Lock()
	c.end = time.Since(c.start)
	c.mu.Unlock()
	return c.Report(), err
}

// startSeeds starts the seeds one after another; each fetches every asset
// (peers first) and pins the site. It returns their addresses.
func (c *Crowd) startSeeds(ctx context.Context) ([]string, error) {
	var addrs []string
	for i := range c.cfg.Seeds {
		mb, err := c.newMember(ctx, fmt.Sprintf("seed-%d", i+1), mesh.RoleSeed, c.cfg.Seed, addrs)
		if err != nil {
			return nil, err
		}
		if err := c.fetchAll(ctx, mb, c.allPaths()); err != nil {
			return nil, err
		}
		if err := mb.node.Pin(ctx, c.m); err != nil {
			return nil, fmt.Errorf("meshtest: crowd: %s: pin: %w", mb.name, err)
		}
		addrs = append(addrs, mb.node.Addrs()[0].String())
	}
	return addrs, nil
}

func (c *Crowd) allPaths() []string {
	ps := make([]string, len(c.m.Assets))
	for i, a := range c.m.Assets {
		ps[i] = a.Path
	}
	return ps
}

func (c *Crowd) newMember(ctx context.Context, name string, role mesh.Role, cfg mesh.Config, boot []string) (*member, error) {
	cfg.Role = role
	cfg.Origin = c.cfg.Origin.URL()
	cfg.Bootstrap = append(append([]string(nil), cfg.Bootstrap...), boot...)
	if c.dir != "" {
		cfg.DataDir = filepath.Join(c.dir, name)
	}
	if cfg.Logger != nil {
		cfg.Logger = cfg.Logger.With("node", name) // one log for the crowd
	}
	n, err := mesh.New(ctx, LocalConfig(cfg))
	if err != nil {
		return nil, fmt.Errorf("meshtest: crowd: %s: %w", name, err)
	}
	mb := &member{name: name, role: role, node: n}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		n.Close()
		return nil, fmt.Errorf("meshtest: crowd: %s: %w", name, mesh.ErrClosed)
	}
	c.members = append(c.members, mb)
	return mb, nil
}

// arrive runs the apps' schedule and waits for every app to be done.
func (c *Crowd) arrive(ctx context.Context, seeds []string) error {
	times := c.cfg.Arrival(c.cfg.Apps)
	a := &arrivals{rng: rand.New(rand.NewPCG(c.cfg.Rand, 1))}
	width := len(fmt.Sprint(c.cfg.Apps))
	clock := time.Now()
	errs := make([]error, c.cfg.Apps)
	var wg sync.WaitGroup
	for i := range c.cfg.Apps {
		at := times[min(i, len(times)-1)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(time.Until(clock.Add(at)))
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			paths := c.cfg.Assets
			if c.cfg.AppAssets != nil {
				paths = c.cfg.AppAssets(i)
			}
			errs[i] = c.join(ctx, fmt.Sprintf("app-%0*d", width, i+1), paths, seeds, a)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// arrivals are the apps that have arrived so far, in order of arrival.
type arrivals struct {
	mu   sync.Mutex
	rng  *rand.Rand
	apps []*arrival
}

// arrival is one app of arrivals.
type arrival struct {
	ready chan struct{} // closed when addr is set (empty: the app did not start)
	addr  string
}

// arrive records an app's arrival and returns it with up to n of the apps
// that arrived before it, chosen at random: its neighbours, whether or not
// they have finished starting (an app picking only among those started
// made a star of a crowd arriving faster than an app starts: the few
// started first were the only ones up when half the crowd arrived, and
// each of those connected to nothing but them).
func (a *arrivals) arrive(n int) (*arrival, []*arrival) {
	a.mu.Lock()
	defer a.mu.Unlock()
	me := &arrival{ready: make(chan struct{})}
	var before []*arrival
	for _, j := range a.rng.Perm(len(a.apps)) {
		if len(before) >= n {
			break
		}
		before = append(before, a.apps[j])
	}
	a.apps = append(a.apps, me)
	return me, before
}

// started records that me has started listening on addr (empty: it failed
// to start).
func (me *arrival) started(addr string) {
	me.addr = addr
	close(me.ready)
}

// startedAddr returns me's address if it has started, and whether it has
// (with an address).
func (me *arrival) startedAddr() (string, bool) {
	select {
	case <-me.ready:
		return me.addr, me.addr != ""
	default:
		return "", false
	}
}

// readyAddrs returns the addresses of those of as that have started.
func readyAddrs(as []*arrival) []string {
	var out []string
	for _, x := range as {
		if addr, ok := x.startedAddr(); ok {
			out = append(out, addr)
		}
	}
	return out
}

// pick returns up to n addresses of apps started so far, at random, none
// of them in not.
func (a *arrivals) pick(n int, not []string) []string {
	a.mu.Lock()
	started := slices.DeleteFunc(readyAddrs(a.apps), func(addr string) bool { return slices.Contains(not, addr) })
	perm := a.rng.Perm(len(started))
	a.mu.Unlock()
	var out []string
	for _, j := range perm[:min(n, len(perm))] {
		out = append(out, started[j])
	}
	return out
}

// meetEarlier connects a just-started app to each of before (neighbours
// that arrived before it) not in boot, once it has started (waiting up to
// neighbourWait for it), as an app that learnt of them dials them when
// they are up.
func (c *Crowd) meetEarlier(ctx context.Context, n *mesh.Node, before []*arrival, boot []string) {
	wctx, cancel := context.WithTimeout(ctx, neighbourWait)
	defer cancel()
	for _, x := range before {
		select {
		case <-x.ready:
		case <-wctx.Done():
			return
		}
		if x.addr == "" || slices.Contains(boot, x.addr) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = n.Connect(cctx, x.addr) // a neighbour that cannot be reached is not one
		cancel()
	}
}

// neighbourWait bounds how long an app waits for a neighbour that arrived
// before it to start.
const neighbourWait = 10 * time.Second

// meetLate connects a just-started app to up to k apps that finished
// starting while it started, none of them in not, as mDNS finds whoever is
// up on a LAN: the first apps to arrive have fewer than Neighbours apps
// that arrived before them. It returns how many it connected to.
func (c *Crowd) meetLate(ctx context.Context, n *mesh.Node, a *arrivals, k int, not []string) int {
	if k <= 0 {
		return 0
	}
	self := n.Addrs()[0].String()
	met := 0
	for _, addr := range a.pick(k, append(not, self)) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if n.Connect(cctx, addr) == nil {
			met++
		}
		cancel()
	}
	return met
}

// join starts an arriving app bootstrapped to the seeds and to those of
// its neighbours (apps that arrived before it) that have started, connects
// it to the others as they start, waits to hear of a holder, and fetches.
func (c *Crowd) join(ctx context.Context, name string, paths, seeds []string, a *arrivals) error {
	arrivedAt := time.Since(c.start)
	k := max(c.cfg.Neighbours, 0)
	me, before := a.arrive(k)
	ready := readyAddrs(before)
	boot := append(append([]string(nil), seeds...), ready...)
	mb, err := c.newMember(ctx, name, mesh.RoleApp, c.cfg.App, boot)
	if err != nil {
		me.started("")
		return err
	}
	mb.mu.Lock()
	mb.arrival = arrivedAt
	mb.mu.Unlock()
	me.started(mb.node.Addrs()[0].String())
	var wg sync.WaitGroup
	defer wg.Wait()
	if len(ready) < len(before) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.meetEarlier(ctx, mb.node, before, ready)
		}()
	}
	late := c.meetLate(ctx, mb.node, a, k-len(before), ready)
	if c.cfg.WaitProvider > 0 && len(seeds)+len(before)+late > 0 && len(paths) > 0 {
		wctx, cancel := context.WithTimeout(ctx, c.cfg.WaitProvider)
		if mb.node.WaitPeers(wctx, 1) == nil {
			last, _ := c.m.Lookup(paths[len(paths)-1])
			WaitProvider(wctx, mb.node, last.Cid)
		}
		cancel()
	}
	return c.fetchAll(ctx, mb, paths)
}

// Load calls fetch for each of paths, one after another or, together, the
// first and then all the others at once, as a browser loads a page and the
// resources it names; it starts none once ctx has ended, and returns when
// every call it made has.
func Load(ctx context.Context, paths []string, together bool, fetch func(path string)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, p := range paths {
		if ctx.Err() != nil {
			return
		}
		if i == 0 || !together {
			fetch(p)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fetch(p)
		}()
	}
}

// fetchAll fetches paths through the member's node, reading each to the
// end and comparing it with the site: one after another, or with Together
// the first and then the others at once.
func (c *Crowd) fetchAll(ctx context.Context, mb *member, paths []string) error {
	var (
		mu   sync.Mutex
		errs []error
	)
	one := func(p string) {
		fr := c.fetchOne(ctx, mb, p)
		mb.mu.Lock()
		mb.fetches = append(mb.fetches, fr)
		mb.mu.Unlock()
		if fr.Err != "" {
			mu.Lock()
			errs = append(errs, fmt.Errorf("meshtest: crowd: %s: %s: %s", mb.name, p, fr.Err))
			mu.Unlock()
		}
	}
	Load(ctx, paths, c.cfg.Together, one)
	mb.mu.Lock()
	mb.done = time.Since(c.start)
	mb.mu.Unlock()
	return errors.Join(errs...)
}

func (c *Crowd) fetchOne(ctx context.Context, mb *member, p string) FetchReport {
	fr := FetchReport{Node: mb.name, Role: mb.role, Path: p, Start: time.Since(c.start)}
	t0 := time.Now()
	r, a, err := mb.node.OpenAsset(ctx, c.m, p)
	if err != nil {
		fr.Err = err.Error()
		return fr
	}
	defer r.Close()
	cw := &compareWriter{want: c.cfg.Origin.Site()[p]}
	n, err := io.Copy(cw, r)
	fr.Duration = time.Since(t0)
	st := r.Stats()
	fr.TTFB, fr.Size = st.TTFB, a.Size
	fr.PeerBytes, fr.OriginBytes, fr.LocalBytes, fr.Hedged = st.PeerBytes, st.OriginBytes, st.LocalBytes, st.Hedged
	switch {
	case err != nil:
		fr.Err = err.Error()
	case cw.bad || n != a.Size:
		fr.Err = fmt.Sprintf("read %d bytes that differ from the site's %d", n, a.Size)
	}
	return fr
}

// compareWriter checks what it is given against want.
type compareWriter struct {
	want []byte
	off  int
	bad  bool
}

func (w *compareWriter) Write(p []byte) (int, error) {
	if w.off+len(p) > len(w.want) || !bytes.Equal(p, w.want[w.off:w.off+len(p)]) {
		w.bad = true
	}
	w.off += len(p)
	return len(p), nil
}

// Close closes every node of the crowd (several at a time) and removes the
// stores of a Badger crowd. It waits for the nodes' goroutines; Run, if
// still going, then fails. It is idempotent and returns the nodes' errors.
func (c *Crowd) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	members := c.members
	c.mu.Unlock()
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, mb := range members {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := mb.node.Close(); err != nil && !errors.Is(err, mesh.ErrClosed) {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	if c.dir != "" {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}
