package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/internal/wake"
	"github.com/meshcdn/meshcdn/manifest"
)

// Defaults of the GatewayConfig fields whose zero value means "the default".
const (
	// DefaultGatewayFirstByteTimeout bounds how long the gateway waits with
	// no byte coming for the first leaf of a response, and for each later
	// leaf, before it answers 504 (or, once headers are out, aborts the
	// connection).
	DefaultGatewayFirstByteTimeout = 20 * time.Second
	// DefaultGatewayWriteTimeout bounds how long one write to a client
	// (at most 32 KiB) may block before the connection is dropped.
	DefaultGatewayWriteTimeout = 60 * time.Second
	// DefaultGatewayMaxRanges is the most byte ranges one request may ask
	// for; a Range header with more is ignored and the whole content sent.
	DefaultGatewayMaxRanges = 16
	// DefaultGatewayMaxBuffer bounds the bytes that the fetches of a
	// gateway's requests may hold in memory at once.
	DefaultGatewayMaxBuffer = 256 << 20
)

// gatewayParkAfter is how long a write to a client may block before the
// request's fetch is closed, releasing its read-ahead window; the fetch is
// opened again (from the store) when the client reads on. While another
// request waits for MaxBuffer, a write blocked for gatewayParkCheck parks
// its fetch already: a client that stops reading delays others by that
// much, not a second.
const (
	gatewayParkAfter = time.Second
	gatewayParkCheck = 100 * time.Millisecond
)

// GatewayConfig configures a Gateway. Zero fields mean the default stated
// beside them. Node.Gateway copies it.
type GatewayConfig struct {
	// Manifest maps the paths the gateway serves. Nil serves only /ipfs/CID.
	// Replace it later with SetManifest.
	Manifest *manifest.Manifest

	// AllowRemote lets clients on other machines use the gateway. Default
	// false: requests from addresses other than loopback get 403, even if
	// the gateway was bound to a wider address by mistake.
	AllowRemote bool

	// Hosts are host names, besides the loopback ones, that requests may
	// name in their Host header (without port; compared without case).
	// The gateway always accepts localhost, names under .localhost and IP
	// literals (127.0.0.1, [::1], any port); any other Host gets 403, so
	// that a web page cannot read the gateway through DNS rebinding (a name
	// of the page's own that resolves to 127.0.0.1). Default none.
	Hosts []string

	// AllowCrossSite lets pages of other sites use the gateway. Default
	// false: a request a browser marks as sent by a page of another site
	// (Sec-Fetch-Site: cross-site; or, from a browser that does not send
	// it, an Origin header naming neither a loopback name nor the Host)
	// gets 403, so that a page on the web cannot have the node fetch, keep
	// and serve content of its choosing by CID (an <img> pointing at
	// 127.0.0.1), nor time what it holds. A webview loading its page from
	// the gateway is same-origin. Set it for a renderer loaded from
	// file:// or a custom scheme, whose requests browsers mark cross-site.
	AllowCrossSite bool

	// FirstByteTimeout bounds how long a request waits with no byte coming
	// from any source: for the first leaf it needs (then the answer is 504
	// before any header) and for each later one (then the connection is
	// aborted). A leaf (up to 1 MiB) is served once it has all come and
	// been verified; an origin that keeps sending it, however slowly, is
	// not cut (fetch.Reader.LastByte). Default
	// DefaultGatewayFirstByteTimeout (20 s); negative means no bound beyond
	// the fetch's own.
	FirstByteTimeout time.Duration

	// WriteTimeout bounds how long one write of at most 32 KiB to a client
	// may block; a client that takes longer is disconnected. Default
	// DefaultGatewayWriteTimeout (60 s); negative means no bound.
	WriteTimeout time.Duration

	// MaxRanges is the most byte ranges a request may ask for; a Range
	// header with more is ignored and the whole content is sent with 200
	// (RFC 9110 allows ignoring Range). Default DefaultGatewayMaxRanges
	// (16); negative means no cap.
	MaxRanges int

	// MaxBuffer bounds the bytes the open fetches of the gateway's requests
	// may hold at once. Each request counts, while its fetch is open, one
	// leaf (1 MiB) for itself plus its fetch's in-memory window: as many
	// leaves as are left to read, at most fetch.Config.WindowBytes (8 MiB;
	// fetch.Config.ReadAhead leaves if that is unbounded). A request that
	// would go over waits for others to end or park (see Gateway), within
	// FirstByteTimeout, and otherwise gets 503 (or, after its headers, an
	// aborted connection). One request larger than the bound runs alone.
	// Default DefaultGatewayMaxBuffer (256 MiB: 28 large streams at once,
	// many more small files); negative means no bound.
	MaxBuffer int64
}

// withDefaults returns c with every zero field set to its default.
func (c GatewayConfig) withDefaults() GatewayConfig {
	if c.FirstByteTimeout == 0 {
		c.FirstByteTimeout = DefaultGatewayFirstByteTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultGatewayWriteTimeout
	}
	if c.MaxRanges == 0 {
		c.MaxRanges = DefaultGatewayMaxRanges
	}
	if c.MaxBuffer == 0 {
		c.MaxBuffer = DefaultGatewayMaxBuffer
	}
	c.Hosts = append([]string(nil), c.Hosts...)
	for i, h := range c.Hosts {
		c.Hosts[i] = normHost(h)
	}
	return c
}

// Gateway is a local HTTP gateway: an http.Handler that serves the assets of
// a manifest by path (GET /img/logo.png) and any content by CID (GET
// /ipfs/CID; a path under /ipfs/ that is no CID is the site's own, for a
// site with an ipfs folder), fetched through the node, with Range requests, ETags from CIDs
// (If-None-Match gives 304), HEAD and the manifest's content types. A desktop
// webview or Electron renderer loads assets from it. Serve it on 127.0.0.1,
// with an http.Server's ReadHeaderTimeout set: see run in examples/desktop.
//
// It answers with the truth: 200 or 206 only once the first bytes of the
// answer are in hand (verified); 504 when no source gave them within
// GatewayConfig.FirstByteTimeout or the origin timed out, 502 when every
// source failed (origin 404, 500 or down, bytes that fail verification), the
// reason in the body; 503 when the origin shed load (429 or 503 after the
// fetch's retries), with its Retry-After. A source that fails after the headers went out aborts
// the connection: the client sees a truncated transfer, never a short body
// that looks whole. A path ending in "/" serves its index.html, and a
// directory asked for without the slash (GET /docs for docs/index.html) is
// redirected to it (302, not 301: a later version of the site may make the
// path a file). Unknown paths are 404, unsafe paths and bad CIDs
// (including CIDs whose hash no bytes are checked against: another hash
// than sha2-256 and identity, or a sha2-256 digest cut short; and CIDs of
// another codec than raw and dag-pb, which name no UnixFS file) 400,
// other methods 405, Host names it does not serve 403. A raw CID with an
// identity hash holds its bytes: it is answered from the CID itself.
//
// What a request costs: while the client reads, its fetch's in-memory
// window (fetch.Config.WindowBytes, 8 MiB by default, or the rest of a
// smaller file), one 1 MiB leaf buffer and a goroutine. The windows of all
// requests together stay within GatewayConfig.MaxBuffer (256 MiB): a
// request that would go over waits. A client that stops reading for a
// second, or for 0.1 s while another request waits, gives its window back
// (its fetch is closed, and opened again at the same place, from the
// store, when it reads on), so a stalled reader
// holds its socket, a goroutine and a 32 KiB copy buffer; one that blocks a
// write for GatewayConfig.WriteTimeout (60 s) is disconnected. Every range
// of a multi-range request is cut from the one leaf read for it: a leaf is
// read once while the ranges move forward, and a request has at most
// GatewayConfig.MaxRanges ranges.
//
// With Config.PrometheusRegisterer, requests are counted in
// meshcdn_gateway_requests_total by class (2xx, 3xx, 4xx, 5xx, and aborted:
// responses cut after the headers, by a failed source, a client that left
// or one that did not read for the write timeout). A Gateway is safe for
// concurrent use.
type Gateway struct {
	n       *Node
	cfg     GatewayConfig
	m       atomic.Pointer[manifest.Manifest]
	metrics *prometheus.CounterVec // nil without a registerer
	budget  *semaphore.Weighted    // MaxBuffer; nil for no bound
	waiting atomic.Int64           // requests waiting for budget
	window  int64                  // a fetch's in-memory window, in leaves
}

// Gateway returns a gateway serving through the node. Gateways of one node
// share their request metrics.
func (n *Node) Gateway(cfg GatewayConfig) *Gateway {
	g := &Gateway{n: n, cfg: cfg.withDefaults(), window: windowLeaves(n.fetcher.Config())}
	if g.cfg.MaxBuffer > 0 {
		g.budget = semaphore.NewWeighted(g.cfg.MaxBuffer)
	}
	g.m.Store(cfg.Manifest)
	g.metrics = gatewayMetrics(n.metrics.registerer())
	return g
}

// windowLeaves is how many leaves a fetch of fc holds in memory ahead of
// its reader at most: its WindowBytes in leaves, within its ReadAhead.
func windowLeaves(fc fetch.Config) int64 {
	n := int64(fc.ReadAhead)
	if fc.WindowBytes > 0 {
		n = min(n, max(1, (fc.WindowBytes+leafSize-1)/leafSize))
	}
	return n
}

// The label values of meshcdn_gateway_requests_total.
var gatewayClasses = []string{"2xx", "3xx", "4xx", "5xx", "aborted"}

// gatewayMetrics registers the request counter on reg, or finds the one a
// gateway of the same node registered before. Nil reg: nil.
func gatewayMetrics(reg prometheus.Registerer) *prometheus.CounterVec {
	if reg == nil {
		return nil
	}
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "meshcdn", Subsystem: "gateway",
		Name: "requests_total", Help: "Gateway requests answered, by status class (2xx, 3xx, 4xx, 5xx; aborted: cut after the headers)."},
		[]string{"class"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil
		}
		c = existing
	}
	for _, l := range gatewayClasses {
		c.WithLabelValues(l)
	}
	return c
}

// SetManifest replaces the manifest the gateway serves paths from.
func (g *Gateway) SetManifest(m *manifest.Manifest) { g.m.Store(m) }

// ServeHTTP answers one request; see Gateway.
func (g *Gateway) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &gatewayWriter{ResponseWriter: rw, rc: http.NewResponseController(rw), timeout: g.cfg.WriteTimeout}
	defer func() {
		if g.metrics == nil {
			return
		}
		class := "aborted"
		if !w.aborted {
			class = strconv.Itoa(w.status/100) + "xx"
		}
		if w.aborted || (w.status >= 200 && w.status < 600) {
			g.metrics.WithLabelValues(class).Inc()
		}
	}()
	g.serveHTTP(w, r)
}

func (g *Gateway) serveHTTP(w *gatewayWriter, r *http.Request) {
	if !g.allowRemoteAddr(r.RemoteAddr) {
		http.Error(w, "meshcdn gateway: loopback clients only", http.StatusForbidden)
		return
	}
	if !g.allowHost(r.Host) {
		http.Error(w, "meshcdn gateway: Host not served (see GatewayConfig.Hosts)", http.StatusForbidden)
		return
	}
	if !g.cfg.AllowCrossSite && g.crossSite(r) {
		http.Error(w, "meshcdn gateway: not for pages of other sites (see GatewayConfig.AllowCrossSite)", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if g.n.closed.Load() {
		http.Error(w, ErrClosed.Error(), http.StatusServiceUnavailable)
		return
	}
	t, typ, status, msg := g.resolve(r.URL.Path)
	switch status {
	case 0:
		g.serve(w, r, t, typ)
	case http.StatusFound:
		// A directory asked for without its slash: its index, as a
		// static file server does. Not permanent: a later version of
		// the site may make the path a file. Relative to the request,
		// as http.FileServer's: under http.StripPrefix an absolute one
		// named a path without the prefix (http.Redirect makes a
		// relative one absolute from the stripped path). "./" keeps a
		// name with a colon from reading as a scheme.
		loc := "./" + path.Base(r.URL.EscapedPath()) + "/"
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusFound)
	default:
		http.Error(w, msg, status)
	}
}

// byCID reports whether the path names content by its CID (/ipfs/CID),
// which never changes, as resolve reads it: a site's own ipfs/ folder
// (/ipfs/app.js) is the site's, whose files a new version may change.
func byCID(p string) bool {
	_, ok, err := cidOf(p)
	return ok && err == nil
}

// cidOf decodes the CID a path /ipfs/CID (or /ipfs/CID/) names; ok is
// false for a path outside /ipfs/.
func cidOf(p string) (c cid.Cid, ok bool, err error) {
	rest, ok := strings.CutPrefix(p, "/ipfs/")
	if !ok {
		return cid.Undef, false, nil
	}
	c, err = cid.Decode(strings.TrimSuffix(rest, "/"))
	return c, true, err
}

// resolve maps a request path to what to fetch, or to an error status.
func (g *Gateway) resolve(p string) (t fetch.Target, typ string, status int, msg string) {
	m := g.m.Load()
	if c, ok, err := cidOf(p); ok {
		if err != nil && g.sitePath(m, p) {
			return g.resolvePath(m, p) // the site's own ipfs/ folder
		}
		if err != nil {
			return t, "", http.StatusBadRequest, "bad CID"
		}
		if dagfile.CheckHash(c) != nil {
			// No source's bytes could be verified against it.
			return t, "", http.StatusBadRequest, "bad CID: unsupported hash (sha2-256 of 32 bytes, or identity)"
		}
		if c.Type() != cid.Raw && c.Type() != cid.DagProtobuf {
			return t, "", http.StatusBadRequest, "bad CID: not a UnixFS file (codec raw or dag-pb)"
		}
		t = fetch.Target{Cid: c, Gateway: g.n.cfg.Gateway}
		if m != nil {
			for _, a := range m.Assets {
				// The same content in any CID version: a dag-pb CIDv0
				// (Qm…) names what the manifest's CIDv1 does.
				if a.Cid.Type() == c.Type() && bytes.Equal(a.Cid.Hash(), c.Hash()) {
					// The manifest knows its size and inner nodes, and
					// where the origin serves it.
					if at, err := g.n.target(a); err == nil {
						t = at
					}
					return t, a.Type, 0, ""
				}
			}
		}
		return t, "", 0, ""
	}
	return g.resolvePath(m, p)
}

// sitePath reports whether the site m has a file, or a folder with an
// index.html, at request path p.
func (g *Gateway) sitePath(m *manifest.Manifest, p string) bool {
	if m == nil {
		return false
	}
	rel := strings.TrimPrefix(p, "/")
	if rel == "" || strings.HasSuffix(rel, "/") {
		rel += "index.html"
	}
	_, file := m.Lookup(rel)
	_, dir := m.Lookup(rel + "/index.html")
	return file || dir
}

// resolvePath maps a request path to the file of the site m at it.
func (g *Gateway) resolvePath(m *manifest.Manifest, p string) (t fetch.Target, typ string, status int, msg string) {
	if m == nil {
		return t, "", http.StatusNotFound, "404 page not found"
	}
	rel := strings.TrimPrefix(p, "/")
	if rel == "" || strings.HasSuffix(rel, "/") {
		rel += "index.html"
	}
	if err := manifest.CheckPath(rel); err != nil {
		return t, "", http.StatusBadRequest, "bad path"
	}
	a, ok := m.Lookup(rel)
	if !ok {
		if _, dir := m.Lookup(rel + "/index.html"); dir {
			return t, "", http.StatusFound, ""
		}
		return t, "", http.StatusNotFound, "404 page not found"
	}
	t, err := g.n.target(a)
	if err != nil {
		return t, "", http.StatusInternalServerError, err.Error()
	}
	return t, a.Type, 0, ""
}

// serve answers r with the content of t: the first bytes it needs are
// fetched before any header is written, so that a failure is an honest
// 502/504; a failure after the headers aborts the connection.
func (g *Gateway) serve(w *gatewayWriter, r *http.Request, t fetch.Target, typ string) {
	etag := `"` + t.Cid.String() + `"`
	h := w.Header()
	h.Set("Etag", etag)
	h.Set("X-Ipfs-Path", "/ipfs/"+t.Cid.String())
	if byCID(r.URL.Path) {
		h.Set("Cache-Control", "public, max-age=29030400, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if typ != "" {
		h.Set("Content-Type", typ)
	}
	if etagMatch(r.Header.Get("If-None-Match"), etag) {
		// ServeContent answers 304 before reading anything.
		http.ServeContent(w, r, "", noModTime, emptySeeker{})
		return
	}
	if data, ok := inlineBytes(t.Cid); ok {
		http.ServeContent(w, g.limitRanges(r), "", noModTime, bytes.NewReader(data))
		return
	}
	src := &source{g: g, ctx: r.Context(), t: t, size: -1, leaf: -1}
	if t.Size > 0 || len(t.Nodes) > 0 {
		src.size = t.Size
	}
	defer src.close()
	w.src = src
	if err := src.prime(primeRange(r, etag), g.cfg.MaxRanges); err != nil {
		h.Del("Etag")
		h.Del("X-Ipfs-Path")
		h.Del("Cache-Control")
		h.Del("Content-Type")
		if d := retryAfter(err); d > 0 {
			h.Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
		}
		http.Error(w, err.Error(), errorStatus(err))
		return
	}
	// ServeContent answers HEAD, Range and conditional requests; it learns
	// the size by seeking to the end, which src answers without fetching.
	http.ServeContent(w, g.limitRanges(r), "", noModTime, src)
	if err := src.failure(); err != nil && w.wroteHeader {
		// The headers promised bytes that cannot come: cut the
		// connection so the client sees a failed transfer.
		w.aborted = true
		g.n.log.Info("gateway response aborted", "cid", t.Cid, "err", err)
		panic(http.ErrAbortHandler)
	}
}

var noModTime time.Time

// primeRange returns the Range header of r as ServeContent will act on it:
// none when an If-Range does not name etag (another ETag, a weak one, or
// a date, which no content of the gateway matches: no Last-Modified), as
// then the whole content is sent, whose first bytes are those to prime.
func primeRange(r *http.Request, etag string) string {
	if ir := strings.Trim(r.Header.Get("If-Range"), " \t"); ir != "" {
		if t, _ := scanETag(ir); t != etag {
			return ""
		}
	}
	return r.Header.Get("Range")
}

// limitRanges returns r as ServeContent is to act on it: without its
// Range header if it asks for more ranges than GatewayConfig.MaxRanges (the
// whole content is sent instead), and without the suffix ranges of length
// zero it names.
func (g *Gateway) limitRanges(r *http.Request) *http.Request {
	h := r.Header.Get("Range")
	switch {
	case g.cfg.MaxRanges >= 0 && countRanges(h) > g.cfg.MaxRanges:
		r = r.Clone(r.Context())
		r.Header.Del("Range")
	case h != "":
		if kept := dropEmptySuffixes(h); kept != h {
			r = r.Clone(r.Context())
			r.Header.Set("Range", kept)
		}
	}
	return r
}

// unsatisfiable is a Range header no content satisfies: ServeContent
// answers it 416 with the content's size.
const unsatisfiable = "bytes=9223372036854775807-"

// dropEmptySuffixes returns the Range header h without its suffix ranges
// of length zero ("-0"), which RFC 9110 section 14.1.1 calls unsatisfiable
// and http.ServeContent would answer with an impossible Content-Range
// ("bytes 5-4/5"). A header of nothing else becomes unsatisfiable; any
// other header is returned as it is.
func dropEmptySuffixes(h string) string {
	specs, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return h
	}
	var kept []string
	dropped := false
	for spec := range strings.SplitSeq(specs, ",") {
		// Read as ServeContent reads it: spaces and tabs trimmed, the
		// length by strconv.ParseInt.
		first, last, ok := strings.Cut(strings.Trim(spec, " \t"), "-")
		last = strings.Trim(last, " \t")
		if ok && strings.Trim(first, " \t") == "" && !strings.HasPrefix(last, "-") {
			if n, err := strconv.ParseInt(last, 10, 64); err == nil && n == 0 {
				dropped = true
				continue
			}
		}
		kept = append(kept, spec)
	}
	switch {
	case !dropped:
		return h
	case countRanges(strings.Join(kept, ",")) == 0:
		return unsatisfiable
	}
	return "bytes=" + strings.Join(kept, ",")
}

// inlineBytes returns the bytes a raw CID with an identity hash holds.
func inlineBytes(c cid.Cid) ([]byte, bool) {
	if c.Type() != cid.Raw || c.Prefix().MhType != mh.IDENTITY {
		return nil, false
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return nil, false
	}
	return d.Digest, true
}

// errorStatus maps a fetch failure to the status the gateway answers.
func errorStatus(err error) int {
	var se *fetch.OriginStatusError
	switch {
	case errors.Is(err, errBusy):
		return http.StatusServiceUnavailable
	case errors.As(err, &se) && (se.StatusCode == http.StatusTooManyRequests || se.StatusCode == http.StatusServiceUnavailable):
		return http.StatusServiceUnavailable // the origin sheds load: so does the gateway, with its Retry-After
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrClosed), errors.Is(err, fetch.ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

// retryAfter is the wait an origin that shed load asked for, in the
// failure err (0: none).
func retryAfter(err error) time.Duration {
	var se *fetch.OriginStatusError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}

// etagMatch reports whether an If-None-Match header names etag (or is *),
// read as http.ServeContent reads it: entity-tags up to the first malformed
// one, compared weakly. The two must agree: where etagMatch says yes,
// ServeContent is given no content, and a header it reads otherwise
// ("bogus, ETAG") would get a 200 with an empty body.
func etagMatch(header, etag string) bool {
	s := header
	for {
		s = strings.Trim(s, " \t")
		switch {
		case s == "":
			return false
		case s[0] == ',':
			s = s[1:]
			continue
		case s[0] == '*':
			return true
		}
		t, rest := scanETag(s)
		if t == "" {
			return false // malformed: ServeContent stops here too
		}
		if strings.TrimPrefix(t, "W/") == etag {
			return true
		}
		s = rest
	}
}

// scanETag splits the entity-tag (W/"..." or "...") at the start of s from
// the rest, as net/http does; a malformed one gives "".
func scanETag(s string) (etag, rest string) {
	start := 0
	if strings.HasPrefix(s, "W/") {
		start = 2
	}
	if len(s[start:]) < 2 || s[start] != '"' {
		return "", ""
	}
	for i := start + 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return s[:i+1], s[i+1:]
		case c == 0x21 || c >= 0x23 && c <= 0x7e || c >= 0x80:
		default:
			return "", ""
		}
	}
	return "", ""
}

// emptySeeker is the content of a 304: ServeContent never reads it.
type emptySeeker struct{}

func (emptySeeker) Read([]byte) (int, error)          { return 0, io.EOF }
func (emptySeeker) Seek(int64, int) (int64, error)    { return 0, nil }
func (g *Gateway) allowRemoteAddr(remote string) bool { return g.cfg.AllowRemote || isLoopback(remote) }

// allowHost reports whether a request's Host header names this gateway:
// localhost, a name under .localhost, an IP literal, or a configured name.
func (g *Gateway) allowHost(hostport string) bool {
	if hostport == "" {
		return false
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	host = normHost(host)
	// A literal address cannot be rebound to another.
	return loopbackName(host) || net.ParseIP(host) != nil || slices.Contains(g.cfg.Hosts, host)
}

// normHost is a host name as the gateway compares it: lower case, without
// a trailing dot.
func normHost(host string) string { return strings.TrimSuffix(strings.ToLower(host), ".") }

// crossSite reports whether a browser sent r for a page of another site:
// it says so (Sec-Fetch-Site, which Chromium, Firefox and Safari send to
// loopback), or, not saying, names an Origin that is neither a loopback
// name (localhost, *.localhost, a loopback address) nor the request's Host.
func (g *Gateway) crossSite(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "cross-site"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false // not a browser's cross-origin request
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return true // "null": a file:// or sandboxed page
	}
	if u.Host == r.Host || loopbackName(u.Hostname()) {
		return false
	}
	return !slices.Contains(g.cfg.Hosts, normHost(u.Hostname()))
}

// loopbackName reports whether host (without port) names this machine:
// localhost, a name under .localhost, or a loopback address.
func loopbackName(host string) bool {
	host = normHost(host)
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// gatewayWriter is the ResponseWriter the gateway writes through: it
// records the status, bounds each write with the write timeout, and while
// a write blocks long, parks the request's fetch.
type gatewayWriter struct {
	http.ResponseWriter
	rc          *http.ResponseController
	timeout     time.Duration
	src         *source
	parkMu      sync.Mutex
	park        *time.Timer  // checks a blocked write (checkPark); under parkMu
	writing     atomic.Int64 // when the write under way began (unix ns), 0 between writes
	status      int
	wroteHeader bool
	aborted     bool
}

func (w *gatewayWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.wroteHeader = true
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *gatewayWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.timeout > 0 {
		_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) // unsupported by some writers: no bound there
	}
	if w.src != nil {
		w.writing.Store(time.Now().UnixNano())
		defer w.writing.Store(0)
		w.armPark()
		defer w.stopPark()
	}
	n, err := w.ResponseWriter.Write(p)
	if err != nil {
		w.aborted = true // the client went, or did not read for the write timeout
	}
	return n, err
}

// checkPark runs gatewayParkCheck after a write began and every
// gatewayParkCheck while it blocks: it parks the request's fetch once the
// write has blocked gatewayParkAfter, or at once if another request waits
// for the gateway's MaxBuffer.
func (w *gatewayWriter) checkPark() {
	began := w.writing.Load()
	if began == 0 {
		return // the write returned
	}
	if w.src.g.waiting.Load() > 0 || time.Since(time.Unix(0, began)) >= gatewayParkAfter {
		w.src.park()
		return
	}
	w.armPark()
}

// armPark has checkPark run in gatewayParkCheck.
func (w *gatewayWriter) armPark() {
	w.parkMu.Lock()
	defer w.parkMu.Unlock()
	if w.park == nil {
		w.park = time.AfterFunc(gatewayParkCheck, w.checkPark)
		return
	}
	w.park.Reset(gatewayParkCheck)
}

// stopPark stops the check of a write that returned.
func (w *gatewayWriter) stopPark() {
	w.parkMu.Lock()
	defer w.parkMu.Unlock()
	w.park.Stop()
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *gatewayWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// leafSize is the size of every leaf but a file's last (unixfs-v1-2025).
const leafSize = 1 << 20

// source is the content of one response as an io.ReadSeeker for
// http.ServeContent. It reads whole leaves from a fetch.Reader into one
// buffer and cuts every Read from it, so ranges within a leaf cost one
// read of it; seeks only move its own position. Each leaf read is bounded
// by GatewayConfig.FirstByteTimeout. While the client blocks a write, park
// closes the fetch.Reader (the read-ahead window goes with it); the next
// leaf read opens a new one.
type source struct {
	g    *Gateway
	ctx  context.Context // the request's
	t    fetch.Target
	pos  int64
	size int64 // -1 until known

	mu      sync.Mutex
	rd      *fetch.Reader // nil until opened, and while parked
	rdCtx   context.Context
	cancel  context.CancelCauseFunc
	held    int64 // bytes of Gateway.budget held for rd
	rdPos   int64
	reading bool
	closed  bool
	leaf    int64 // index of the leaf in buf; -1 for none
	buf     []byte
	err     error // the first failure to read
}

// errNoByte is the cause of a leaf read cut by FirstByteTimeout.
var errNoByte = errors.New("no byte from any source in time")

// prime reads the first leaf the answer needs (the start of the first
// range of rangeHeader, or 0), and the first leaf if the size is unknown.
// An answer of ranges within primeLeaves leaves has them all read first:
// it is small, and a failure on its second leaf would otherwise come after
// the status line, an empty reply instead of a 502 with its reason.
func (s *source) prime(rangeHeader string, maxRanges int) error {
	if s.size < 0 {
		if err := s.fill(0); err != nil {
			return err
		}
	}
	first := int64(0)
	var rs []byteRange
	if rangeHeader != "" {
		var err error
		rs, err = parseRanges(rangeHeader, s.size)
		if err != nil {
			return nil // ServeContent answers 416 without reading
		}
		// As limitRanges and ServeContent decide: more items than
		// maxRanges, or ranges adding up to more than the content, get
		// the whole content.
		var sum int64
		for _, r := range rs {
			sum += r.length
		}
		if (maxRanges < 0 || countRanges(rangeHeader) <= maxRanges) && sum <= s.size {
			first = rs[0].start
		} else {
			rs = nil
		}
	}
	if first >= s.size {
		return nil // nothing to read (the empty file)
	}
	if more := rangeLeaves(rs); len(more) <= primeLeaves {
		for _, i := range slices.Backward(more) { // the first one last: the answer begins with it
			if i != first/leafSize {
				if err := s.fill(i); err != nil {
					return err
				}
			}
		}
	}
	if i := first / leafSize; i != s.leaf {
		return s.fill(i)
	}
	return nil
}

// primeLeaves is how many leaves a ranged answer may span and still have
// them all read before its headers (prime).
const primeLeaves = 2

// rangeLeaves lists, in order and once each, the leaves that rs cover.
func rangeLeaves(rs []byteRange) []int64 {
	var ls []int64
	for _, r := range rs {
		if r.length <= 0 {
			continue
		}
		for i := r.start / leafSize; i <= (r.start+r.length-1)/leafSize; i++ {
			if !slices.Contains(ls, i) {
				ls = append(ls, i)
			}
			if len(ls) > primeLeaves {
				return ls
			}
		}
	}
	slices.Sort(ls)
	return ls
}

// Read reads from the leaf at the position, reading it first if needed.
func (s *source) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.size >= 0 && s.pos >= s.size {
		return 0, io.EOF
	}
	for {
		i := s.pos / leafSize
		s.mu.Lock()
		if s.leaf == i {
			n := copy(p, s.buf[s.pos-i*leafSize:])
			s.mu.Unlock()
			s.pos += int64(n)
			return n, nil
		}
		s.mu.Unlock()
		if err := s.fill(i); err != nil {
			return 0, err
		}
	}
}

// Seek moves the position; it reads nothing.
func (s *source) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += s.pos
	case io.SeekEnd:
		offset += s.size
	}
	if offset < 0 {
		return 0, errors.New("mesh: gateway: seek to a negative position")
	}
	s.pos = offset
	return offset, nil
}

// fill reads leaf i into the buffer.
func (s *source) fill(i int64) error {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return s.err
	}
	s.reading = true
	buf := s.buf
	s.buf, s.leaf = nil, -1
	s.mu.Unlock()

	n, err := s.readLeaf(i, buf[:cap(buf)])

	s.mu.Lock()
	defer s.mu.Unlock()
	s.reading = false
	if s.closed {
		// The response ended while this read went on (ServeContent's
		// multi-range writer outlives it when the client goes).
		s.closeLocked()
		return errSourceClosed
	}
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return s.err
	}
	s.buf, s.leaf = n, i
	return nil
}

// readLeaf reads leaf i from the fetch (opening one if there is none) into
// buf, within FirstByteTimeout. Only fill calls it, with reading set.
func (s *source) readLeaf(i int64, buf []byte) ([]byte, error) {
	off := i * leafSize
	if s.rd == nil {
		if err := s.open(off); err != nil {
			return nil, err
		}
	}
	if off != s.rdPos {
		if _, err := s.rd.Seek(off, io.SeekStart); err != nil {
			return nil, fmt.Errorf("mesh: gateway: %w", err)
		}
		s.rdPos = off
	}
	want := int64(leafSize)
	if s.size >= 0 {
		want = min(want, s.size-off)
	}
	if int64(cap(buf)) < want {
		buf = make([]byte, want)
	}
	buf = buf[:want]
	var w *byteWatch
	if d := s.g.cfg.FirstByteTimeout; d > 0 {
		w = watchBytes(s.rd, d, s.cancel)
	}
	n, err := io.ReadFull(s.rd, buf)
	fired := w != nil && w.stop()
	s.rdPos += int64(n)
	if s.size < 0 && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) {
		if size := s.rd.Size(); size >= 0 && off+int64(n) == size {
			err = nil // the content's only leaf, shorter than a chunk
		}
	}
	if err == nil && s.size < 0 {
		s.size = s.rd.Size()
	}
	if err != nil {
		if cause := context.Cause(s.rdCtx); cause != nil && errors.Is(cause, errNoByte) {
			err = cause
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = fmt.Errorf("content ended at %d bytes, before its size: %w", off+int64(n), err)
		}
		return nil, fmt.Errorf("mesh: gateway: %s: %w", s.t.Cid, err)
	}
	if fired {
		// The timeout fired as the leaf came: the fetch is cancelled,
		// so the next leaf needs another.
		s.mu.Lock()
		s.closeLocked()
		s.mu.Unlock()
	}
	// n, not len(buf): the only leaf of content of unknown size is
	// shorter than the buffer, and ServeContent sniffs what Read gives.
	return buf[:n], nil
}

// byteWatch cancels a fetch that no source has sent a byte for d
// (FirstByteTimeout): not d after the leaf was asked for, since a leaf is
// read only whole and a slow origin that keeps sending takes longer than d
// over a 1 MiB leaf (one at 40 KiB/s got a 504 after 20 s with 800 KB of
// the leaf come). A check that runs wake.Late or more after it was due
// found the process itself not running (a laptop that slept, where the
// monotonic clock counts the sleep, as on Windows; a process stopped): the
// sources get d from then on. Before, a response the gateway was sending
// when the app slept for longer than d was cut at the wake, the sources
// never given a chance to go on.
type byteWatch struct {
	rd     interface{ LastByte() time.Time } // a *fetch.Reader
	d      time.Duration
	since  time.Time
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	t       *time.Timer
	due     time.Time // when the timer is set to fire
	stopped bool
	fired   bool
}

// watchBytes starts a byteWatch over rd from now.
func watchBytes(rd interface{ LastByte() time.Time }, d time.Duration, cancel context.CancelCauseFunc) *byteWatch {
	w := &byteWatch{rd: rd, d: d, since: time.Now(), cancel: cancel}
	w.mu.Lock()
	w.due = w.since.Add(d)
	w.t = time.AfterFunc(d, w.check)
	w.mu.Unlock()
	return w
}

// check cancels the fetch if its last byte (or the watch's start, if
// later) is d old, and looks again when it would be otherwise.
func (w *byteWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	now := time.Now()
	if wake.Slept(w.due, now) {
		w.since = now // asleep: the sources get d from the wake
	}
	last := w.rd.LastByte()
	if last.Before(w.since) {
		last = w.since
	}
	if idle := now.Sub(last); idle < w.d {
		w.due = now.Add(w.d - idle)
		w.t.Reset(w.d - idle)
		return
	}
	w.fired = true
	w.cancel(fmt.Errorf("%w (%v): %w", errNoByte, w.d, context.DeadlineExceeded))
}

// stop ends the watch and reports whether it had cancelled the fetch.
func (w *byteWatch) stop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.t.Stop()
	return w.fired
}

// errBusy reports a request that found the gateway's MaxBuffer taken.
var errBusy = errors.New("mesh: gateway: busy: its open fetches hold GatewayConfig.MaxBuffer")

// open opens a fetch of the target, to be read from off, within the
// gateway's MaxBuffer. Only readLeaf calls it.
func (s *source) open(off int64) error {
	held, err := s.reserve(off)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	rd, err := s.g.n.fetcher.Open(ctx, s.t)
	if err != nil {
		cancel(nil)
		if held > 0 { // no budget (MaxBuffer < 0) holds nothing
			s.g.budget.Release(held)
		}
		return fmt.Errorf("mesh: gateway: %w", err)
	}
	s.mu.Lock()
	s.rd, s.rdCtx, s.cancel, s.rdPos, s.held = rd, ctx, cancel, 0, held
	s.mu.Unlock()
	return nil
}

// reserve takes from the gateway's budget what a fetch read from off may
// hold: one leaf, and the read-ahead window over what is left. It waits
// for others to release, within FirstByteTimeout.
func (s *source) reserve(off int64) (int64, error) {
	b := s.g.budget
	if b == nil {
		return 0, nil
	}
	leaves := s.g.window
	if s.size >= 0 {
		leaves = min(leaves, (s.size-off+leafSize-1)/leafSize)
	}
	n := min((leaves+1)*leafSize, s.g.cfg.MaxBuffer)
	ctx := s.ctx
	if d := s.g.cfg.FirstByteTimeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	if b.TryAcquire(n) {
		return n, nil
	}
	s.g.waiting.Add(1) // blocked writers park for it: checkPark
	defer s.g.waiting.Add(-1)
	if err := b.Acquire(ctx, n); err != nil {
		return 0, fmt.Errorf("%w (waited %v)", errBusy, s.g.cfg.FirstByteTimeout)
	}
	return n, nil
}

// park closes the fetch while no leaf is being read, releasing its
// read-ahead window and the leaf buffer; the next fill opens another. The
// timer of a write that blocks calls it.
func (s *source) park() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rd == nil || s.reading {
		return
	}
	s.closeLocked()
	s.buf, s.leaf = nil, -1
}

func (s *source) closeLocked() {
	if s.rd != nil {
		s.cancel(nil)
		s.rd.Close()
		s.rd, s.cancel = nil, nil
		if s.held > 0 {
			s.g.budget.Release(s.held)
			s.held = 0
		}
	}
}

// close ends the fetch and frees the buffer. A leaf read under way is
// cancelled, and closes the fetch when it returns.
func (s *source) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.buf, s.leaf = nil, -1
	if s.reading {
		if s.cancel != nil {
			s.cancel(errSourceClosed)
		}
		return
	}
	s.closeLocked()
}

var errSourceClosed = errors.New("mesh: gateway: response ended")

// failure returns the first failure to read, if any.
func (s *source) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// countRanges counts the comma-separated items of a Range header, valid
// or not: what bounds the work of a multi-range answer.
func countRanges(h string) int {
	n := 0
	for spec := range strings.SplitSeq(h, ",") {
		if strings.TrimSpace(spec) != "" {
			n++
		}
	}
	return n
}

// byteRange is one satisfiable range of a Range header: [start, start+length).
type byteRange struct{ start, length int64 }

var errBadRange = errors.New("mesh: gateway: bad Range header")

// parseRanges parses a Range header ("bytes=0-99,200-,-50") against a
// content of size bytes, as RFC 9110 section 14.1.2 says: ranges that start
// past the end are dropped, ends past it are cut. It fails on a malformed
// header, on one whose every range is unsatisfiable, and when the size is
// unknown (negative). No header gives no ranges.
func parseRanges(s string, size int64) ([]byteRange, error) {
	if s == "" {
		return nil, nil
	}
	if size < 0 {
		return nil, errBadRange
	}
	specs, ok := strings.CutPrefix(s, "bytes=")
	if !ok {
		return nil, errBadRange
	}
	var out []byteRange
	for spec := range strings.SplitSeq(specs, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		first, last, ok := strings.Cut(spec, "-")
		if !ok {
			return nil, errBadRange
		}
		first, last = strings.TrimSpace(first), strings.TrimSpace(last)
		var r byteRange
		if first == "" {
			// A suffix: the last n bytes.
			n, err := parseDigits(last)
			if err != nil {
				return nil, err
			}
			if n == 0 || size == 0 {
				continue
			}
			n = min(n, size)
			r = byteRange{start: size - n, length: n}
		} else {
			start, err := parseDigits(first)
			if err != nil {
				return nil, err
			}
			end := size - 1
			if last != "" {
				if end, err = parseDigits(last); err != nil {
					return nil, err
				}
				if end < start {
					return nil, errBadRange
				}
				end = min(end, size-1)
			}
			if start >= size {
				continue // unsatisfiable: dropped
			}
			r = byteRange{start: start, length: end - start + 1}
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errBadRange
	}
	return out, nil
}

// parseDigits parses a non-negative decimal of at most 18 digits.
func parseDigits(s string) (int64, error) {
	if s == "" || len(s) > 18 {
		return 0, errBadRange
	}
	var n int64
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, errBadRange
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}
