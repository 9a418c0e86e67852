package meshtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshcdn/meshcdn/manifest"
)

// OriginConfig configures an Origin. The zero value serves an empty site
// with no shaping, no latency and Range support.
type OriginConfig struct {
	// Site is what the origin serves, by path. Default: Dir's files, or an
	// empty site.
	Site Site

	// Dir, if Site is nil, is a directory whose regular files are read
	// into the Site at start (see ReadDir). Default none.
	Dir string

	// ManifestPath is where the site's manifest is served. Default
	// "manifest.json". It is not part of the site and its bytes are not
	// counted as sent.
	ManifestPath string

	// BytesPerSecond is the origin's uplink, shared by every client and
	// request: what the site's CDN or server can send in all. Default 0:
	// unlimited.
	BytesPerSecond int64

	// Burst is the most bytes the uplink sends at once; bodies are written
	// in pieces of at most this size. Default 64 KiB.
	Burst int

	// Latency is added before the first byte of every asset response (and
	// of every fault): the round trip to a distant origin. Default 0.
	Latency time.Duration

	// NoRange turns Range support off: every request gets the whole file
	// with 200 and no Accept-Ranges header. Default false: ranges served.
	NoRange bool

	// Seeds is the manifest's "seeds" field (multiaddrs of the site's
	// seeds, see manifest.Manifest.Seeds) until SetSeeds changes it.
	// Default none.
	Seeds []string

	// Label, if set, names the client of each request (for instance from
	// its User-Agent); Stats counts the bytes sent to each label. Default
	// nil: no labels.
	Label func(*http.Request) string
}

// Origin is an HTTP origin on 127.0.0.1 serving a Site and its manifest, as
// a site's CDN would, with a shaped uplink, added latency and faults on
// demand, counting what it actually sends. Responses carry CORS headers, so
// that pages from other origins (browser tests) can read them. Make one with
// NewOrigin; Close stops it. An Origin is safe for concurrent use; faults can
// be set while it serves.
type Origin struct {
	cfg       OriginConfig
	version   atomic.Pointer[version]
	deploying sync.Mutex // SetSite and SetSeeds, one at a time
	url       string
	srv       *http.Server
	uplink    *rate.Limiter
	done      chan struct{}
	handlers  sync.WaitGroup
	served    chan struct{}
	close     sync.Once
	closing   sync.Mutex // orders handlers.Add before Close's Wait

	fault atomic.Pointer[FaultFunc]

	sent, requests    atomic.Int64
	manifests, notMod atomic.Int64
	mu                sync.Mutex
	paths             map[string]*PathStats
	labels            map[string]int64
}

// version is a site and its manifest, as served together.
type version struct {
	site  Site
	seeds []string
	m     *manifest.Manifest
	mj    []byte
	etag  string
}

func newVersion(site Site, seeds []string) (*version, error) {
	m, err := site.Manifest(context.Background())
	if err != nil {
		return nil, err
	}
	m.Seeds = seeds
	mj, err := m.Marshal()
	if err == nil && len(seeds) > 0 {
		_, err = manifest.Parse(mj) // seeds a client would refuse
	}
	if err != nil {
		return nil, fmt.Errorf("meshtest: origin: %w", err)
	}
	sum := sha256.Sum256(mj)
	return &version{site: site, seeds: seeds, m: m, mj: mj, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}, nil
}

// PathStats counts the requests for one path and the body bytes sent for it.
type PathStats struct {
	Requests int64
	Sent     int64
}

// OriginStats is a snapshot of what an Origin has done since NewOrigin.
type OriginStats struct {
	// Requests counts asset requests (the manifest's are not counted),
	// faulted ones included.
	Requests int64
	// Sent counts the asset body bytes handed to the network: a write that
	// fails is taken back, so Sent is never behind what clients received.
	Sent int64
	// Paths holds Requests and Sent per asset path.
	Paths map[string]PathStats
	// Labels holds Sent per OriginConfig.Label name.
	Labels map[string]int64
	// ManifestRequests counts requests for the manifest; ManifestNotModified
	// those answered 304 (If-None-Match with the current ETag).
	ManifestRequests, ManifestNotModified int64
}

// NewOrigin starts an origin on 127.0.0.1 with a port chosen by the system.
// It builds the site's manifest first (see Site.Manifest).
func NewOrigin(cfg OriginConfig) (*Origin, error) {
	site := cfg.Site
	if site == nil && cfg.Dir != "" {
		var err error
		if site, err = ReadDir(cfg.Dir); err != nil {
			return nil, err
		}
	}
	if site == nil {
		site = Site{}
	}
	if cfg.ManifestPath == "" {
		cfg.ManifestPath = "manifest.json"
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 64 << 10
	}
	v, err := newVersion(site, cfg.Seeds)
	if err != nil {
		return nil, err
	}
	o := &Origin{cfg: cfg, done: make(chan struct{}), served: make(chan struct{}),
		paths: map[string]*PathStats{}, labels: map[string]int64{}}
	o.version.Store(v)
	if cfg.BytesPerSecond > 0 {
		o.uplink = rate.NewLimiter(rate.Limit(cfg.BytesPerSecond), cfg.Burst)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("meshtest: origin: %w", err)
	}
	o.url = "http://" + ln.Addr().String()
	o.srv = &http.Server{Handler: http.HandlerFunc(o.serveTracked), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: discardLog}
	go func() {
		defer close(o.served)
		o.srv.Serve(ln)
	}()
	return o, nil
}

// URL is the origin's base URL (http://127.0.0.1:PORT, no trailing slash):
// what mesh.Config.Origin takes.
func (o *Origin) URL() string { return o.url }

// ManifestURL is the absolute URL of the site's manifest.
func (o *Origin) ManifestURL() string { return o.url + "/" + o.cfg.ManifestPath }

// Manifest is the current site's manifest. Callers must not change it.
func (o *Origin) Manifest() *manifest.Manifest { return o.version.Load().m }

// Site is the site the origin serves now. Callers must not change it.
func (o *Origin) Site() Site { return o.version.Load().site }

// SetSite deploys a new version of the site: from now on the origin serves
// site and its manifest (with a new ETag), atomically; requests under way
// finish with the version they started with. The manifest keeps the seeds
// in effect (see SetSeeds). It returns the new manifest. Safe to call while
// the origin serves.
func (o *Origin) SetSite(site Site) (*manifest.Manifest, error) {
	return o.deploy(func(v *version) (*version, error) { return newVersion(site, v.seeds) })
}

// SetSeeds publishes the site again with seeds as its manifest's "seeds"
// field (a new ETag; the files stay), as a deploy that moves the site's
// seeds would. It returns the new manifest. Safe to call while the origin
// serves.
func (o *Origin) SetSeeds(seeds ...string) (*manifest.Manifest, error) {
	return o.deploy(func(v *version) (*version, error) { return newVersion(v.site, seeds) })
}

// deploy replaces the version in effect with next's answer.
func (o *Origin) deploy(next func(*version) (*version, error)) (*manifest.Manifest, error) {
	o.deploying.Lock()
	defer o.deploying.Unlock()
	v, err := next(o.version.Load())
	if err != nil {
		return nil, err
	}
	o.version.Store(v)
	return v.m, nil
}

// Sent returns the asset body bytes sent so far (see OriginStats.Sent).
func (o *Origin) Sent() int64 { return o.sent.Load() }

// Requests returns the asset requests answered or faulted so far.
func (o *Origin) Requests() int64 { return o.requests.Load() }

// Stats returns a snapshot of the origin's counts.
func (o *Origin) Stats() OriginStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := OriginStats{Requests: o.requests.Load(), Sent: o.sent.Load(), Paths: map[string]PathStats{}, Labels: map[string]int64{},
		ManifestRequests: o.manifests.Load(), ManifestNotModified: o.notMod.Load()}
	for p, ps := range o.paths {
		s.Paths[p] = *ps
	}
	for l, n := range o.labels {
		s.Labels[l] = n
	}
	return s
}

// Close stops the origin: it ends stalled and hung responses, closes every
// connection and waits for every handler and goroutine of the origin to
// return. It is idempotent.
func (o *Origin) Close() {
	o.close.Do(func() {
		o.closing.Lock()
		close(o.done)
		o.closing.Unlock()
		o.srv.Close()
		<-o.served
		o.handlers.Wait()
	})
}

// serveTracked serves a request from the origin's listener; Close waits
// for it.
func (o *Origin) serveTracked(w http.ResponseWriter, r *http.Request) {
	// A connection accepted before Close may start its handler while
	// Close waits: the Add is under Close's lock, or the request is cut.
	o.closing.Lock()
	select {
	case <-o.done:
		o.closing.Unlock()
		panic(http.ErrAbortHandler)
	default:
	}
	o.handlers.Add(1)
	o.closing.Unlock()
	defer o.handlers.Done()
	o.ServeHTTP(w, r)
}

// ServeHTTP answers one request as the origin does on its listener: for
// tests that carry requests in memory (a testing/synctest bubble). Such
// requests are the caller's: Close ends their hangs and stalls but does not
// wait for them.
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Headers", "Range")
	h.Set("Access-Control-Expose-Headers", "Content-Range, Content-Length")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	v := o.version.Load()
	isManifest := p == o.cfg.ManifestPath
	data, isAsset := v.site[p]
	isAsset = isAsset && !isManifest
	if isAsset {
		o.requests.Add(1)
		o.count(p, r, 0, true)
	}
	var f Fault
	if fn := o.fault.Load(); fn != nil && *fn != nil {
		f = (*fn)(r)
	}
	if !isAsset && f.Kind != FaultStatus && f.Kind != FaultHang {
		f = Fault{} // body faults and delays are for assets only
	}
	d := f.Delay
	if isAsset {
		d += o.cfg.Latency
	}
	if !o.wait(r.Context(), d) {
		panic(http.ErrAbortHandler) // the client or the origin has gone
	}
	switch f.Kind {
	case FaultStatus:
		code := f.Status
		if code == 0 {
			code = http.StatusInternalServerError
		}
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		http.Error(w, http.StatusText(code), code)
		return
	case FaultHang:
		o.wait(r.Context(), -1)
		panic(http.ErrAbortHandler) // never an answer, not even an empty one
	}
	if isManifest {
		o.manifests.Add(1)
		if r.Header.Get("If-None-Match") == v.etag {
			o.notMod.Add(1)
		}
		h.Set("Content-Type", "application/json")
		h.Set("Etag", v.etag)
		http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(v.mj))
		return
	}
	if !isAsset {
		http.NotFound(w, r)
		return
	}
	if o.cfg.NoRange {
		r.Header.Del("Range")
		w = noRangeWriter{w}
	}
	pw := &pacedWriter{ResponseWriter: w, o: o, r: r, path: p, fault: f}
	http.ServeContent(pw, r, p, time.Time{}, bytes.NewReader(data))
	if pw.abort {
		panic(http.ErrAbortHandler) // cut the connection mid-body
	}
}

// wait waits d (forever if d < 0) and reports false if the request or the
// origin ended first.
func (o *Origin) wait(ctx context.Context, d time.Duration) bool {
	if d == 0 {
		return true
	}
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
		return true
	case <-ctx.Done():
	case <-o.done:
	}
	return false
}

// count adds n sent bytes for path p (and a request if req).
func (o *Origin) count(p string, r *http.Request, n int64, req bool) {
	o.sent.Add(n)
	o.mu.Lock()
	defer o.mu.Unlock()
	ps := o.paths[p]
	if ps == nil {
		ps = &PathStats{}
		o.paths[p] = ps
	}
	ps.Sent += n
	if req {
		ps.Requests++
	}
	if o.cfg.Label != nil && n != 0 {
		o.labels[o.cfg.Label(r)] += n
	}
}

// pacedWriter writes a body through the shared uplink in burst-sized
// pieces, counting each piece before it leaves, and applies the request's
// fault to the body.
type pacedWriter struct {
	http.ResponseWriter
	o       *Origin
	r       *http.Request
	path    string
	fault   Fault
	written int64
	abort   bool
}

var errFault = errors.New("meshtest: injected fault")

func (w *pacedWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), w.o.cfg.Burst)]
		chunk, stop := w.applyFault(chunk)
		if len(chunk) > 0 {
			if w.o.uplink != nil {
				if err := w.o.uplink.WaitN(w.r.Context(), len(chunk)); err != nil {
					return written, err
				}
			}
			w.o.count(w.path, w.r, int64(len(chunk)), false)
			n, err := w.ResponseWriter.Write(chunk)
			w.o.count(w.path, w.r, int64(n-len(chunk)), false)
			written += n
			w.written += int64(n)
			if err != nil {
				return written, err
			}
		}
		if stop {
			return written, w.stop()
		}
		p = p[len(chunk):]
	}
	return written, nil
}

// applyFault cuts chunk at the fault's offset for a stall or truncation
// (stop reports that the body ends there) or corrupts it from the offset on.
func (w *pacedWriter) applyFault(chunk []byte) ([]byte, bool) {
	f := w.fault
	switch f.Kind {
	case FaultStall, FaultTruncate:
		if left := f.After - w.written; left < int64(len(chunk)) {
			return chunk[:max(left, 0)], true
		}
	case FaultCorrupt:
		if end := w.written + int64(len(chunk)); end > f.After {
			c := bytes.Clone(chunk)
			for i := max(f.After-w.written, 0); i < int64(len(c)); i++ {
				c[i] ^= 0xff
			}
			return c, false
		}
	}
	return chunk, false
}

// stop ends the body after a stall or truncation fault's bytes.
func (w *pacedWriter) stop() error {
	if fl, ok := w.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	if w.fault.Kind == FaultStall {
		w.o.wait(w.r.Context(), -1)
	}
	w.abort = true
	return errFault
}

func (w *pacedWriter) Flush() {
	if fl, ok := w.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

// noRangeWriter hides the Accept-Ranges header http.ServeContent sets.
type noRangeWriter struct{ http.ResponseWriter }

func (w noRangeWriter) WriteHeader(code int) {
	w.Header().Del("Accept-Ranges")
	w.ResponseWriter.WriteHeader(code)
}

func (w noRangeWriter) Write(p []byte) (int, error) {
	w.Header().Del("Accept-Ranges")
	return w.ResponseWriter.Write(p)
}
