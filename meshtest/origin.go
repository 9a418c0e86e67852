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
	// seeds) of the site served at start. Default none.
	Seeds []string

	// Label, if set, names the client of each request (for instance from
	// its User-Agent); Stats counts the bytes sent to each label. Default
	// nil: no labels.
	Label func(*http.Request) string
}

// Origin is an HTTP origin on 127.0.0.1 serving a Site and its manifest, as
// a site's CDN would, with a shaped uplink, added latency and faults on
// demand, counting what it actually sends. Responses carry CORS headers, so
// that pages from other origins (browser tests) can read them. The manifest
// carries an ETag and answers a matching If-None-Match with 304. Make one
// with NewOrigin; Close stops it. An Origin is safe for concurrent use;
// faults can be set and the site redeployed (SetSite) while it serves.
type Origin struct {
	cfg      OriginConfig
	cur      atomic.Pointer[version]
	url      string
	srv      *http.Server
	uplink   *rate.Limiter
	done     chan struct{}
	handlers sync.WaitGroup
	served   chan struct{}
	close    sync.Once

	fault atomic.Pointer[FaultFunc]

	sent, requests         atomic.Int64
	manifests, notModified atomic.Int64
	mu                     sync.Mutex
	paths                  map[string]*PathStats
	labels                 map[string]int64
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
	// ManifestRequests counts the requests for the manifest, and
	// NotModified those of them answered 304 (If-None-Match matched).
	ManifestRequests, NotModified int64
}

// version is one deploy of the site: its files, its manifest and the
// manifest's bytes and ETag.
type version struct {
	site Site
	m    *manifest.Manifest
	mj   []byte
	etag string
}

// newVersion builds site's manifest, with seeds as its "seeds" field.
func newVersion(site Site, seeds []string) (*version, error) {
	m, err := site.Manifest(context.Background())
	if err != nil {
		return nil, err
	}
	m.Seeds = seeds
	mj, err := m.Marshal()
	if err == nil {
		m, err = manifest.Parse(mj) // indexed, as a client sees it
	}
	if err != nil {
		return nil, fmt.Errorf("meshtest: origin: %w", err)
	}
	sum := sha256.Sum256(mj)
	return &version{site: site, m: m, mj: mj, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}, nil
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
	o.cur.Store(v)
	if cfg.BytesPerSecond > 0 {
		o.uplink = rate.NewLimiter(rate.Limit(cfg.BytesPerSecond), cfg.Burst)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("meshtest: origin: %w", err)
	}
	o.url = "http://" + ln.Addr().String()
	o.srv = &http.Server{Handler: http.HandlerFunc(o.serve), ReadHeaderTimeout: 10 * time.Second,
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

// Manifest is the manifest of the site served now. Callers must not change
// it.
func (o *Origin) Manifest() *manifest.Manifest { return o.cur.Load().m }

// Site is the site the origin serves now. Callers must not change it.
func (o *Origin) Site() Site { return o.cur.Load().site }

// SetSite redeploys: from now on the origin serves site, and a manifest
// built from it (see Site.Manifest) with seeds as its "seeds" field, which
// it returns. Files and manifest change together: a request sees the old
// version or the new one, never a mix. Requests under way finish with the
// version they started with; the counts go on across versions. The origin
// keeps site: do not change it afterwards. Safe to call while the origin
// serves.
func (o *Origin) SetSite(site Site, seeds ...string) (*manifest.Manifest, error) {
	v, err := newVersion(site, seeds)
	if err != nil {
		return nil, err
	}
	o.cur.Store(v)
	return v.m, nil
}

// Handler is the origin's HTTP handler, for serving the origin without its
// listener: say, from an in-memory http.RoundTripper in a testing/synctest
// bubble. What it serves is counted as the listener's requests are; Close
// does not wait for its requests, the caller does.
func (o *Origin) Handler() http.Handler { return http.HandlerFunc(o.handle) }

// Sent returns the asset body bytes sent so far (see OriginStats.Sent).
func (o *Origin) Sent() int64 { return o.sent.Load() }

// Requests returns the asset requests answered or faulted so far.
func (o *Origin) Requests() int64 { return o.requests.Load() }

// Stats returns a snapshot of the origin's counts.
func (o *Origin) Stats() OriginStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := OriginStats{Requests: o.requests.Load(), Sent: o.sent.Load(), Paths: map[string]PathStats{}, Labels: map[string]int64{},
		ManifestRequests: o.manifests.Load(), NotModified: o.notModified.Load()}
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
		close(o.done)
		o.srv.Close()
		<-o.served
		o.handlers.Wait()
	})
}

func (o *Origin) serve(w http.ResponseWriter, r *http.Request) {
	o.handlers.Add(1)
	defer o.handlers.Done()
	o.handle(w, r)
}

func (o *Origin) handle(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Headers", "Range")
	h.Set("Access-Control-Expose-Headers", "Content-Range, Content-Length")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/")
	v := o.cur.Load()
	if p == o.cfg.ManifestPath {
		o.serveManifest(w, r, v)
		return
	}
	data, ok := v.site[p]
	if !ok {
		http.NotFound(w, r)
		return
	}
	o.requests.Add(1)
	o.count(p, r, 0, true)
	var f Fault
	if fn := o.fault.Load(); fn != nil && *fn != nil {
		f = (*fn)(r)
	}
	if !o.wait(r.Context(), o.cfg.Latency+f.Delay) {
		panic(http.ErrAbortHandler) // the client or the origin has gone
	}
	switch f.Kind {
	case FaultStatus:
		code := f.Status
		if code == 0 {
			code = http.StatusInternalServerError
		}
		http.Error(w, http.StatusText(code), code)
		return
	case FaultHang:
		o.wait(r.Context(), -1)
		panic(http.ErrAbortHandler) // never an answer, not even an empty one
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

// serveManifest serves v's manifest with its ETag, 304 on a matching
// If-None-Match.
func (o *Origin) serveManifest(w http.ResponseWriter, r *http.Request, v *version) {
	o.manifests.Add(1)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Etag", v.etag)
	if r.Header.Get("If-None-Match") == v.etag {
		o.notModified.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(v.mj)
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
