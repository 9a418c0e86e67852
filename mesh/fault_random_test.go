//go:build fault

package mesh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
	"github.com/meshcdn/meshcdn/store"
)

// The random fault suite's knobs, from the environment:
//
//	MESHCDN_FAULT_SEED=N     replays the schedule of seed N (default: a new
//	                         seed each run, logged)
//	MESHCDN_FAULT_FETCHES=N  runs N fetches (default 200)
const (
	faultSeedEnv    = "MESHCDN_FAULT_SEED"
	faultFetchesEnv = "MESHCDN_FAULT_FETCHES"
)

// faultKind is a fault the random suite injects into one fetch.
type faultKind int

const (
	fkNone faultKind = iota
	fkKillPeer
	fkResetConns
	fkOrigin500
	fkOriginTruncate
	fkOriginCorrupt
	fkOriginStall
	fkDiskFull
	numFaultKinds
)

var faultKindNames = [numFaultKinds]string{"none", "peer killed", "connections reset", "origin 500",
	"origin truncated", "origin wrong bytes", "origin stall", "disk full"}

func (k faultKind) String() string { return faultKindNames[k] }

// origin reports whether the fault is done by the origin to one request.
func (k faultKind) origin() bool { return k >= fkOrigin500 && k <= fkOriginStall }

// originFails reports whether the fault makes the origin fail the fetch
// (it is not asked again within it): then the fetch may fail, typed.
func (k faultKind) originFails() bool {
	return k == fkOrigin500 || k == fkOriginCorrupt || k == fkOriginStall
}

// typedErrors are the sentinels a fetch under faults may fail with, by
// name; any other error fails the test.
var typedErrors = []struct {
	name string
	err  error
}{
	{"context.DeadlineExceeded", context.DeadlineExceeded},
	{"fetch.ErrChanged", fetch.ErrChanged},
	{"fetch.ErrVerify", fetch.ErrVerify},
	{"fetch.ErrUnavailable", fetch.ErrUnavailable},
	{"fetch.ErrNoRoute", fetch.ErrNoRoute},
	{"fetch.ErrClosed", fetch.ErrClosed},
	{"store.ErrDiskFull", store.ErrDiskFull},
	{"store.ErrQuotaExceeded", store.ErrQuotaExceeded},
	{"store.ErrReadOnly", store.ErrReadOnly},
	{"store.ErrClosed", store.ErrClosed},
	{"mesh.ErrClosed", mesh.ErrClosed},
}

// typedName names the first sentinel err matches, or "".
func typedName(err error) string {
	for _, te := range typedErrors {
		if errors.Is(err, te.err) {
			return te.name
		}
	}
	return ""
}

// faultStep is one fetch of the schedule and the fault injected into it.
type faultStep struct {
	i      int
	app    int
	path   string
	kind   faultKind
	at     int64          // bytes read before a peer, connection or disk fault
	fault  meshtest.Fault // an origin fault
	victim int            // the seed killed
	drop   bool           // remove the content from the app's store after
}

// faultResult is what a fetch did.
type faultResult struct {
	step      faultStep
	injected  bool   // the fault happened (an origin fault: a request got it)
	correct   bool   // every byte, right, no error
	typed     string // the sentinel of its error
	failure   string // why the fetch fails the test
	err       error
	dur       time.Duration
	originHit bool // an origin fault that fails the origin hit the fetch
	stats     fetch.Stats
}

// faultSite is the site: "hot/" assets pinned by the seeds, "cold/" ones
// only the origin (and the apps that fetched them) hold.
var faultSite = map[string]int64{
	"hot/a.bin": 4 << 10, "hot/b.bin": 100<<10 + 7, "hot/c.bin": 700 << 10, "hot/d.bin": 1<<20 + 1,
	"hot/e.bin": 3<<19 + 3, "hot/f.bin": 2<<20 + 17,
	"cold/a.bin": 6<<10 + 1, "cold/b.bin": 300 << 10, "cold/c.bin": 1<<20 - 1, "cold/d.bin": 3 << 19,
	"cold/e.bin": 2<<20 + 3, "cold/f.bin": 5 << 19,
}

const (
	faultApps  = 4
	faultSeeds = 2
	// faultOriginTimeout is the apps' OriginHeaderTimeout and
	// OriginIdleTimeout: a stalled origin fails a fetch after it.
	faultOriginTimeout = 1500 * time.Millisecond
	// faultPeerTimeout is the apps' PeerTimeout: long enough that the
	// seeds, not the origin, serve what they hold on a loaded machine.
	faultPeerTimeout = time.Second
	// faultFetchLimit is the most a fetch may take before it counts as
	// hung.
	faultFetchLimit = 60 * time.Second
)

// faultPlan draws n fetches and their faults from seed.
func faultPlan(seed uint64, n int, paths []string, diskFull bool) []faultStep {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	plan := make([]faultStep, n)
	for i := range plan {
		st := faultStep{i: i, app: i % faultApps, path: paths[rng.IntN(len(paths))], drop: rng.IntN(4) != 0}
		size := faultSite[st.path]
		if rng.IntN(10) >= 3 {
			st.kind = faultKind(1 + rng.IntN(int(numFaultKinds)-1))
		}
		if st.kind == fkDiskFull && !diskFull {
			st.kind = fkNone
		}
		st.at = rng.Int64N(size)
		st.victim = rng.IntN(faultSeeds)
		after := rng.Int64N(min(size, 1<<20))
		switch st.kind {
		case fkOrigin500:
			st.fault = meshtest.Fault{Kind: meshtest.FaultStatus, Status: []int{500, 502, 503}[rng.IntN(3)]}
		case fkOriginTruncate:
			st.fault = meshtest.Fault{Kind: meshtest.FaultTruncate, After: after}
		case fkOriginCorrupt:
			st.fault = meshtest.Fault{Kind: meshtest.FaultCorrupt, After: after}
		case fkOriginStall:
			st.fault = meshtest.Fault{Kind: meshtest.FaultStall, After: after}
			if rng.IntN(3) == 0 {
				st.fault = meshtest.Fault{Kind: meshtest.FaultHang}
			}
		}
		plan[i] = st
	}
	return plan
}

// TestFaultRandom runs 200 fetches of a small site by four apps beside two
// seeds (real nodes on loopback, badger stores on disk; the apps' on small
// tmpfs disks when the test runs as root), injecting a fault drawn from a
// seeded schedule into most of them: a serving seed killed (closed and
// started again on its directory), the app's connections reset, the origin
// answering 500, cutting the body, sending wrong bytes or stalling, and the
// app's disk full. Every fetch must return exactly the site's bytes, or a
// prefix of them and an error matching one of typedErrors; a fetch the
// origin stalled that fails must fail with context.DeadlineExceeded; none
// may hang; and at least 95% of the fetches whose origin was not failed
// (500, wrong bytes, stall) must be correct.
func TestFaultRandomFetches(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(faultSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", faultSeedEnv, s, err)
		}
	}
	n := 200
	if s := os.Getenv(faultFetchesEnv); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive count", faultFetchesEnv, s)
		}
	}
	t.Logf("seed %d (replay: %s=%d go test -race -tags fault -run '^TestFaultRandomFetches$' ./mesh/)", seed, faultSeedEnv, seed)

	fm := newFaultMesh(t)
	plan := faultPlan(seed, n, fm.origin.Site().Paths(), fm.diskFull)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	results := make([]faultResult, len(plan))
	var wg sync.WaitGroup
	for a := range faultApps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := a; i < len(plan); i += faultApps {
				results[i] = fm.run(ctx, plan[i])
			}
		}()
	}
	wg.Wait()
	fm.check(t, results, time.Since(start))
	fm.checkPenalties(t)
}

// faultMesh is the suite's mesh: an origin with fault hooks, seeds that
// can be killed and started again, and apps.
type faultMesh struct {
	t        *testing.T
	origin   *meshtest.Origin
	m        *manifest.Manifest
	hot      *manifest.Manifest
	diskFull bool // the apps' disks can be filled

	faults originFaults

	killMu   sync.Mutex // one kill at a time
	mu       sync.Mutex
	seeds    [faultSeeds]*mesh.Node
	down     [faultSeeds]bool // closed, starting again
	healErrs int
	seedDirs [faultSeeds]string

	apps []*faultApp
}

// faultApp is an app node, its disk (a tmpfs, or "") and its manifest.
type faultApp struct {
	node *mesh.Node
	disk string
	m    *manifest.Manifest
}

func newFaultMesh(t *testing.T) *faultMesh {
	fm := &faultMesh{t: t}
	fm.origin = meshtest.StartOrigin(t, meshtest.OriginConfig{Site: meshtest.GenerateSite(11, faultSite)})
	fm.origin.SetFault(fm.faults.pick)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Cleanup(func() {
		fm.mu.Lock()
		defer fm.mu.Unlock()
		for _, s := range fm.seeds {
			if s != nil {
				s.Close()
			}
		}
	})
	for j := range fm.seeds {
		fm.seedDirs[j] = t.TempDir()
		s, err := mesh.New(ctx, fm.seedCfg(j))
		if err != nil {
			t.Fatal(err)
		}
		fm.seeds[j] = s
		m, err := s.LoadManifest(ctx, "manifest.json")
		if err != nil {
			t.Fatal(err)
		}
		fm.m, fm.hot = m, subManifest(m, "hot/")
		if err := s.Pin(ctx, fm.hot); err != nil {
			t.Fatal(err)
		}
	}
	fm.diskFull = os.Geteuid() == 0
	for i := range faultApps {
		fm.apps = append(fm.apps, fm.newApp(ctx, i))
	}
	for _, a := range fm.apps {
		for _, as := range fm.hot.Assets {
			if err := meshtest.WaitProvider(ctx, a.node, as.Cid); err != nil {
				t.Fatal(err)
			}
		}
	}
	return fm
}

func (fm *faultMesh) seedCfg(j int) mesh.Config {
	return meshtest.LocalConfig(mesh.Config{Name: "faults", Role: mesh.RoleSeed, DataDir: fm.seedDirs[j], Origin: fm.origin.URL()})
}

// newApp starts app i: on a tmpfs of its own when the test may mount one,
// with origin requests marked as its own (so the origin can fault them).
func (fm *faultMesh) newApp(ctx context.Context, i int) *faultApp {
	t := fm.t
	a := &faultApp{}
	dir := t.TempDir()
	if fm.diskFull {
		if a.disk = testutil.TryTmpfs(t, store.DiskMargin+30<<20); a.disk == "" {
			fm.diskFull = false
		} else {
			dir = filepath.Join(a.disk, "data")
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: appTransport{app: i, base: tr}}
	a.node = newNode(t, mesh.Config{Name: "faults", DataDir: dir, Origin: fm.origin.URL(), HTTPClient: client,
		Bootstrap:           []string{fm.seeds[0].Addrs()[0].String(), fm.seeds[1].Addrs()[0].String()},
		OriginHeaderTimeout: faultOriginTimeout, OriginIdleTimeout: faultOriginTimeout, PeerTimeout: faultPeerTimeout,
		Logger: slog.New(slog.NewTextHandler(penaltyLog{t}, nil))})
	var err error
	if a.m, err = a.node.LoadManifest(ctx, "manifest.json"); err != nil {
		t.Fatal(err)
	}
	if err := a.node.WaitPeers(ctx, faultSeeds); err != nil {
		t.Fatal(err)
	}
	return a
}

// penaltyLog logs the penalties a node's log reports, with their reason,
// for checkPenalties's failures.
type penaltyLog struct{ t *testing.T }

func (l penaltyLog) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("penalised")) {
		l.t.Logf("%s", bytes.TrimSpace(p))
	}
	return len(p), nil
}

// appHeader marks an app's origin requests with its number.
const appHeader = "X-Fault-App"

type appTransport struct {
	app  int
	base http.RoundTripper
}

func (tr appTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(appHeader, strconv.Itoa(tr.app))
	return tr.base.RoundTrip(r)
}

// originFaults holds the origin fault each app's fetch under way is to get
// on its first origin request.
type originFaults struct {
	mu      sync.Mutex
	pending [faultApps]*pendingFault
}

type pendingFault struct {
	f   meshtest.Fault
	hit bool
}

func (of *originFaults) set(app int, f meshtest.Fault) *pendingFault {
	of.mu.Lock()
	defer of.mu.Unlock()
	p := &pendingFault{f: f}
	of.pending[app] = p
	return p
}

func (of *originFaults) clear(app int) (hit bool) {
	of.mu.Lock()
	defer of.mu.Unlock()
	hit = of.pending[app] != nil && of.pending[app].hit
	of.pending[app] = nil
	return hit
}

// pick is the origin's FaultFunc.
func (of *originFaults) pick(r *http.Request) meshtest.Fault {
	app, err := strconv.Atoi(r.Header.Get(appHeader))
	if err != nil || app < 0 || app >= faultApps {
		return meshtest.Fault{}
	}
	of.mu.Lock()
	defer of.mu.Unlock()
	p := of.pending[app]
	if p == nil || p.hit {
		return meshtest.Fault{}
	}
	p.hit = true
	return p.f
}

var errFetchHung = errors.New("fetch hung")

// run does one fetch of the plan with its fault and judges it.
func (fm *faultMesh) run(ctx context.Context, st faultStep) faultResult {
	a := fm.apps[st.app]
	fm.heal(ctx, a)
	res := faultResult{step: st}
	if st.kind.origin() {
		fm.faults.set(st.app, st.fault)
	}
	fctx, cancel := context.WithTimeoutCause(ctx, faultFetchLimit, errFetchHung)
	defer cancel()
	start := time.Now()
	var bg sync.WaitGroup
	var got []byte
	r, as, err := a.node.OpenAsset(fctx, a.m, st.path)
	if err == nil {
		got, err = readInjecting(r, st.at, func() { res.injected = fm.inject(ctx, st, &bg) })
		res.stats = r.Stats()
		r.Close()
	}
	res.dur = time.Since(start)
	bg.Wait()
	if st.kind.origin() {
		res.injected = fm.faults.clear(st.app)
		res.originHit = res.injected && st.kind.originFails()
	}
	if st.kind == fkDiskFull && a.disk != "" {
		if err := os.Remove(filepath.Join(a.disk, "filler")); err != nil && !errors.Is(err, os.ErrNotExist) {
			fm.t.Error(err)
		}
	}
	if st.drop {
		if err := a.node.Store().Remove(ctx, as.Cid); err != nil && !errors.Is(err, store.ErrNotPinned) {
			fm.t.Logf("fetch %d: remove %s: %v", st.i, st.path, err)
		}
	}
	res.err = err
	fm.judge(&res, got, context.Cause(fctx))
	return res
}

// readInjecting reads r to its end, calling inject once at bytes read.
func readInjecting(r io.Reader, at int64, inject func()) ([]byte, error) {
	var out []byte
	buf := make([]byte, 32<<10)
	done := false
	for {
		if !done && int64(len(out)) >= at {
			done = true
			inject()
		}
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// judge classifies a fetch: correct, failed with a typed error, or a
// failure of the test (wrong bytes, untyped error, hang).
func (fm *faultMesh) judge(res *faultResult, got []byte, cause error) {
	want := fm.origin.Site()[res.step.path]
	err := res.err
	switch {
	case len(got) > len(want) || string(got) != string(want[:len(got)]):
		res.failure = fmt.Sprintf("WRONG BYTES (%d read of %d, err %v)", len(got), len(want), err)
	case err == nil && len(got) != len(want):
		res.failure = fmt.Sprintf("%d bytes of %d and no error", len(got), len(want))
	case err == nil:
		res.correct = true
	case errors.Is(cause, errFetchHung):
		res.failure = fmt.Sprintf("hung for %v: %v", faultFetchLimit, err)
	default:
		res.typed = typedName(err)
		if res.typed == "" {
			res.failure = fmt.Sprintf("untyped error %T: %v", err, err)
		} else if res.step.kind == fkOriginStall && res.originHit && !errors.Is(err, context.DeadlineExceeded) &&
			!errors.Is(err, fetch.ErrChanged) {
			res.failure = fmt.Sprintf("stalled origin, error not context.DeadlineExceeded: %v", err)
		}
	}
}

// inject does a peer, connection or disk fault (origin faults are set
// before the fetch) and reports whether it did. A killed seed is started
// again in the background, on bg.
func (fm *faultMesh) inject(ctx context.Context, st faultStep, bg *sync.WaitGroup) bool {
	a := fm.apps[st.app]
	switch st.kind {
	case fkKillPeer:
		if !fm.killMu.TryLock() {
			return false // a kill is under way
		}
		bg.Add(1)
		go func() {
			defer bg.Done()
			defer fm.killMu.Unlock()
			fm.restartSeed(ctx, st.victim)
		}()
		return true
	case fkResetConns:
		net := a.node.Host().Network()
		for _, p := range net.Peers() {
			net.ClosePeer(p)
		}
		return true
	case fkDiskFull:
		return fm.fillDisk(a.disk)
	}
	return false
}

// restartSeed closes seed j and starts it again on its directory.
func (fm *faultMesh) restartSeed(ctx context.Context, j int) {
	fm.mu.Lock()
	old := fm.seeds[j]
	fm.down[j] = true
	fm.mu.Unlock()
	defer func() {
		fm.mu.Lock()
		fm.down[j] = false
		fm.mu.Unlock()
	}()
	if err := old.Close(); err != nil {
		fm.t.Errorf("close seed %d: %v", j, err)
	}
	s, err := mesh.New(ctx, fm.seedCfg(j))
	if err != nil {
		fm.t.Errorf("restart seed %d: %v", j, err)
		return
	}
	fm.mu.Lock()
	fm.seeds[j] = s
	fm.mu.Unlock()
}

// fillDisk fills the tmpfs disk to within the store's margin.
func (fm *faultMesh) fillDisk(disk string) bool {
	free, err := store.Statfs(disk)
	if err != nil {
		fm.t.Error(err)
		return false
	}
	size := free - store.DiskMargin + 1<<20
	if size <= 0 {
		return true
	}
	f, err := os.Create(filepath.Join(disk, "filler"))
	if err != nil {
		fm.t.Error(err)
		return false
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		fm.t.Errorf("fill the disk: %v", err)
		return false
	}
	return true
}

// heal connects app a to every seed it is not connected to (a restarted
// seed listens on new ports; reset connections are not dialled again by
// themselves), as a peer coming back would.
func (fm *faultMesh) heal(ctx context.Context, a *faultApp) {
	fm.mu.Lock()
	var seeds []*mesh.Node
	for j, s := range fm.seeds {
		if !fm.down[j] {
			seeds = append(seeds, s)
		}
	}
	fm.mu.Unlock()
	for _, s := range seeds {
		if a.node.Host().Network().Connectedness(s.ID()) == network.Connected {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.node.Connect(cctx, s.Addrs()[0].String())
		cancel()
		if err != nil {
			fm.mu.Lock()
			fm.healErrs++
			fm.mu.Unlock()
		}
	}
}

// check fails the test for every failed fetch and a correct share under
// 95% while the origin was alive, and logs the summary.
func (fm *faultMesh) check(t *testing.T, results []faultResult, took time.Duration) {
	type row struct {
		planned, injected, correct, typed, failed, notKept int
		local, peer, origin                                int64
		took                                               time.Duration
	}
	var kinds [numFaultKinds]row
	errs := map[string]int{}
	var alive, aliveCorrect, correct, typed, failed int
	for _, r := range results {
		k := &kinds[r.step.kind]
		k.planned++
		k.took += r.dur
		k.local += r.stats.LocalBytes
		k.peer += r.stats.PeerBytes
		k.origin += r.stats.OriginBytes
		if r.stats.NotKept > 0 {
			k.notKept++
		}
		if r.injected {
			k.injected++
		}
		switch {
		case r.failure != "":
			k.failed++
			failed++
			t.Errorf("fetch %d (%s, app %d, %s at %d, %+v): %s", r.step.i, r.step.path, r.step.app, r.step.kind, r.step.at, r.step.fault, r.failure)
		case r.correct:
			k.correct++
			correct++
		default:
			k.typed++
			typed++
			errs[r.typed]++
			t.Logf("fetch %d (%s, %s, hit %v): %s after %v: %v", r.step.i, r.step.path, r.step.kind, r.injected, r.typed, r.dur.Round(time.Millisecond), r.err)
		}
		if !r.originHit {
			alive++
			if r.correct {
				aliveCorrect++
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d fetches in %v: %d correct, %d typed errors, %d failures\n", len(results), took.Round(time.Millisecond),
		correct, typed, failed)
	fmt.Fprintf(&b, "%-20s %8s %8s %8s %8s %8s %9s %9s %9s %8s %9s\n", "fault", "planned", "injected", "correct", "typed", "failed",
		"local MiB", "peer MiB", "orig MiB", "not kept", "mean time")
	for k, r := range kinds {
		fmt.Fprintf(&b, "%-20s %8d %8d %8d %8d %8d %9.1f %9.1f %9.1f %8d %9v\n", faultKind(k), r.planned, r.injected, r.correct, r.typed, r.failed,
			float64(r.local)/(1<<20), float64(r.peer)/(1<<20), float64(r.origin)/(1<<20), r.notKept,
			(r.took / time.Duration(max(r.planned, 1))).Round(time.Millisecond))
	}
	for _, te := range typedErrors {
		if errs[te.name] > 0 {
			fmt.Fprintf(&b, "error %-26s %d\n", te.name, errs[te.name])
		}
	}
	fmt.Fprintf(&b, "reconnections to seeds that failed: %d\n", fm.healErrs)
	share := float64(aliveCorrect) / float64(max(alive, 1))
	fmt.Fprintf(&b, "while the origin was alive: %d of %d correct (%.1f%%)", aliveCorrect, alive, 100*share)
	t.Log("summary\n" + b.String())
	if share < 0.95 {
		t.Errorf("%.1f%% of the fetches with the origin alive were correct, want at least 95%%", 100*share)
	}
}

// checkPenalties fails the test if an app penalised a seed: the seeds are
// honest, and being killed and started again or cut off is no offence.
func (fm *faultMesh) checkPenalties(t *testing.T) {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	for i, a := range fm.apps {
		for j, s := range fm.seeds {
			if a.node.Fetcher().Penalised(s.ID()) {
				t.Errorf("app %d penalised the honest seed %d", i, j)
			}
		}
	}
}
