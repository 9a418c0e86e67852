package mesh_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

func TestGateway(t *testing.T) {
	b := startGatewayBed(t, map[string]int64{"index.html": 1500, "css/site.css": 800, "video/v.mp4": 3<<20 + 11, oddName: 300})
	b.video, _ = b.m.Lookup("video/v.mp4")
	b.etag = `"` + b.video.Cid.String() + `"`
	testGatewayServes(t, b)
	testGatewayRefuses(t, b)
}

// startGatewayBed starts a site of files of the given sizes, a node on it
// and its gateway over the site's manifest, for 30 s at most.
func startGatewayBed(t *testing.T, sizes map[string]int64) *gatewayBed {
	t.Helper()
	s := newSite(t, sizes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	n := newNode(t, mesh.Config{Origin: s.URL()})
	m, err := n.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: m}))
	t.Cleanup(gw.Close)
	return &gatewayBed{ctx: ctx, s: s, n: n, m: m, gw: gw}
}

// oddName is a site file whose name has characters that a URL escapes, "%"
// among them; oddNameEscaped is its path in a URL.
const (
	oddName        = "odd dir/100% ü?#.txt"
	oddNameEscaped = "odd%20dir/100%25%20%C3%BC%3F%23.txt"
)

// gatewayBed is what TestGateway's subtests share: a node's gateway over a
// site, and the site's video.
type gatewayBed struct {
	ctx   context.Context
	s     *meshtest.Origin
	n     *mesh.Node
	m     *manifest.Manifest
	gw    *httptest.Server
	video manifest.Asset
	etag  string // the video's ETag
}

// do sends a method request for path, with the headers hdr, to the gateway
// and reads the whole answer.
func (b *gatewayBed) do(t *testing.T, method, path string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(b.ctx, method, b.gw.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// testGatewayServes runs TestGateway's subtests of requests the gateway
// answers with content: whole files, ranges, conditional and HEAD
// requests, the index and paths by CID.
func testGatewayServes(t *testing.T, b *gatewayBed) {
	t.Helper()
	s := b.s
	t.Run("whole file by path", func(t *testing.T) {
		resp, body := b.do(t, "GET", "/video/v.mp4", nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, s.Site()["video/v.mp4"]) {
			t.Fatalf("GET = %d with %d bytes, want 200 with the file", resp.StatusCode, len(body))
		}
		if resp.Header.Get("Etag") != b.etag || resp.Header.Get("Content-Type") != b.video.Type {
			t.Errorf("headers: ETag %q type %q, want %q %q", resp.Header.Get("Etag"), resp.Header.Get("Content-Type"), b.etag, b.video.Type)
		}
	})
	t.Run("range across a leaf boundary", func(t *testing.T) {
		resp, body := b.do(t, "GET", "/video/v.mp4", map[string]string{"Range": "bytes=1048000-1049999"})
		want := s.Site()["video/v.mp4"][1048000:1050000]
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want) {
			t.Fatalf("Range GET = %d with %d bytes, want 206 with 2000", resp.StatusCode, len(body))
		}
	})
	t.Run("suffix range", func(t *testing.T) {
		resp, body := b.do(t, "GET", "/video/v.mp4", map[string]string{"Range": "bytes=-11"})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, s.Site()["video/v.mp4"][3<<20:]) {
			t.Fatalf("suffix Range = %d %d bytes", resp.StatusCode, len(body))
		}
	})
	t.Run("if-none-match", func(t *testing.T) {
		resp, body := b.do(t, "GET", "/video/v.mp4", map[string]string{"If-None-Match": b.etag})
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Fatalf("If-None-Match = %d with %d bytes, want 304", resp.StatusCode, len(body))
		}
	})
	t.Run("head", func(t *testing.T) {
		resp, body := b.do(t, "HEAD", "/css/site.css", nil)
		if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != 800 {
			t.Fatalf("HEAD = %d, %d bytes, length %d", resp.StatusCode, len(body), resp.ContentLength)
		}
	})
	t.Run("index", func(t *testing.T) {
		resp, body := b.do(t, "GET", "/", nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, s.Site()["index.html"]) {
			t.Fatalf("GET / = %d", resp.StatusCode)
		}
	})
	t.Run("file name with characters to escape", func(t *testing.T) {
		resp, body := b.do(t, "GET", "/"+oddNameEscaped, nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, s.Site()[oddName]) {
			t.Fatalf("GET /%s = %d with %d bytes, want 200 with the file", oddNameEscaped, resp.StatusCode, len(body))
		}
	})
	t.Run("by cid", func(t *testing.T) {
		resp, body := b.do(t, "GET", "/ipfs/"+b.video.Cid.String(), map[string]string{"Range": "bytes=5-9"})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, s.Site()["video/v.mp4"][5:10]) {
			t.Fatalf("GET /ipfs/CID = %d %q", resp.StatusCode, body)
		}
	})
}

// testGatewayRefuses runs TestGateway's subtests of requests the gateway
// refuses: bad paths, other methods and remote clients.
func testGatewayRefuses(t *testing.T, b *gatewayBed) {
	t.Helper()
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/nope.html", 404},
		{"/ipfs/not-a-cid", 400},
		{"/ipfs/bafkrebhngdtyq", 400}, // sha2-256 cut to 4 bytes: forgeable
		{"/../../etc/passwd", 400},
		{"/css/..%2f..%2fetc%2fpasswd", 400},
		{"/css/%2e%2e/%2e%2e/etc/passwd", 400},
		{"/a//b", 400},
	} {
		t.Run("bad "+tc.path, func(t *testing.T) {
			resp, _ := b.do(t, "GET", tc.path, nil)
			if resp.StatusCode != tc.want {
				t.Errorf("GET %s = %d, want %d", tc.path, resp.StatusCode, tc.want)
			}
		})
	}
	t.Run("method", func(t *testing.T) {
		resp, _ := b.do(t, "POST", "/index.html", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST = %d, want 405", resp.StatusCode)
		}
	})
	t.Run("remote client refused", func(t *testing.T) {
		req := httptest.NewRequest("GET", "/index.html", nil)
		req.RemoteAddr = "192.0.2.7:5555" // never dialled: the handler only reads it
		req.Host = "192.0.2.1:8080"       // the gateway's own LAN address
		rec := httptest.NewRecorder()
		b.n.Gateway(mesh.GatewayConfig{Manifest: b.m}).ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("non-loopback client = %d, want 403", rec.Code)
		}
		rec = httptest.NewRecorder()
		b.n.Gateway(mesh.GatewayConfig{Manifest: b.m, AllowRemote: true}).ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("non-loopback client with AllowRemote = %d, want 200", rec.Code)
		}
	})
}

// hungOrigin is an origin that never answers (meshtest.FaultHang).
func hungOrigin(t *testing.T) string {
	t.Helper()
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{})
	o.SetFault(meshtest.FaultAll(meshtest.Fault{Kind: meshtest.FaultHang}))
	return o.URL()
}

// downOrigin is the address of an origin that is not running.
func downOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// statusOrigin answers every request with code.
func statusOrigin(t *testing.T, code int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "origin says no", code)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// gatewayGet requests path from a gateway and reads the whole answer; err
// is the error of reading the body.
func gatewayGet(t *testing.T, ctx context.Context, url string, hdr map[string]string) (resp *http.Response, body []byte, err error) {
	t.Helper()
	return clientGet(t, ctx, http.DefaultClient, url, hdr)
}

// clientGet is gatewayGet with a client of the caller's.
func clientGet(t *testing.T, ctx context.Context, client *http.Client, url string, hdr map[string]string) (resp *http.Response, body []byte, err error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp, body, err
}

// TestGatewayHungOrigin: an origin that accepts and never answers, no peer:
// the gateway answers 504 within its FirstByteTimeout plus a second, with
// no byte of content, and the node closes promptly after.
func TestGatewayHungOrigin(t *testing.T) {
	s := newSite(t, map[string]int64{"app.js": 2<<20 + 5, "small.css": 700})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: hungOrigin(t)})
	const timeout = time.Second
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), FirstByteTimeout: timeout}))
	defer gw.Close()
	for _, p := range []string{"/app.js", "/small.css"} {
		start := time.Now()
		resp, body, err := gatewayGet(t, ctx, gw.URL+p, nil)
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("GET %s with a hung origin = %d (%v), want 504", p, resp.StatusCode, err)
		}
		if took > timeout+time.Second {
			t.Errorf("GET %s took %v, want at most %v", p, took, timeout+time.Second)
		}
		if !strings.Contains(string(body), "no byte from any source") || resp.Header.Get("Etag") != "" {
			t.Errorf("504 body %q, ETag %q: want the reason and no content headers", body, resp.Header.Get("Etag"))
		}
	}
}

// TestGatewayOriginTimeout: a fetch that fails because the origin timed
// out (its error wraps context.DeadlineExceeded) is a 504, not a 502.
func TestGatewayOriginTimeout(t *testing.T) {
	s := newSite(t, map[string]int64{"app.js": 2<<20 + 5})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 200 * time.Millisecond}
	n := newNode(t, mesh.Config{Origin: hungOrigin(t), HTTPClient: client})
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), FirstByteTimeout: 50 * time.Second}))
	defer gw.Close()
	resp, body, err := gatewayGet(t, ctx, gw.URL+"/app.js", nil)
	if err != nil || resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("GET with an origin that times out = %d (%v) %q, want 504", resp.StatusCode, err, body)
	}
	if !strings.Contains(string(body), "Timeout") {
		t.Errorf("504 body %q does not say the origin timed out", body)
	}
}

// TestGatewayOriginFails: an origin that answers 404 or 500, or is down,
// and no peer: 502 with the reason, before any header of content, never a
// 200 with missing bytes.
func TestGatewayOriginFails(t *testing.T) {
	s := newSite(t, map[string]int64{"app.js": 2<<20 + 5})
	for _, tc := range []struct {
		name   string
		origin func(*testing.T) string
		hdr    map[string]string
	}{
		{"404", func(t *testing.T) string { return statusOrigin(t, http.StatusNotFound) }, nil},
		{"500 range", func(t *testing.T) string { return statusOrigin(t, http.StatusInternalServerError) }, map[string]string{"Range": "bytes=1048576-"}},
		{"down", downOrigin, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n := newNode(t, mesh.Config{Origin: tc.origin(t)})
			gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest()}))
			defer gw.Close()
			start := time.Now()
			resp, body, err := gatewayGet(t, ctx, gw.URL+"/app.js", tc.hdr)
			took := time.Since(start)
			if err != nil || resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("GET = %d with %d bytes (%v), want 502", resp.StatusCode, len(body), err)
			}
			// At once: not after the fetch's stall timeout (5 s), which a
			// fetch with no provider used to wait after the origin failed.
			if took >= 3*time.Second {
				t.Errorf("502 after %v, want it at once (no peer to wait for)", took)
			}
			if !strings.Contains(string(body), "origin") {
				t.Errorf("502 body %q does not say the origin failed", body)
			}
		})
	}
}

// dyingOrigin serves the first leaf of the file at /app.js and then, for
// any Range that starts later, either hangs (hang) or cuts the connection.
func dyingOrigin(t *testing.T, data []byte, hang bool) string {
	t.Helper()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
			if hang {
				select {
				case <-stop:
				case <-r.Context().Done():
				}
			}
			panic(http.ErrAbortHandler)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv.URL
}

// TestGatewayAbortsMidBody: a source that fails after the headers went out
// (the origin serves the first leaf, then dies or hangs): the client sees
// a broken transfer (unexpected EOF, a reset HTTP/2 stream), never a body
// that ends cleanly short.
func TestGatewayAbortsMidBody(t *testing.T) {
	s := newSite(t, map[string]int64{"app.js": 3<<20 + 5})
	for _, tc := range []struct {
		hang, h2 bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("hang=%v,http2=%v", tc.hang, tc.h2), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n := newNode(t, mesh.Config{Origin: dyingOrigin(t, s.Site()["app.js"], tc.hang)})
			gw := httptest.NewUnstartedServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), FirstByteTimeout: time.Second}))
			client := http.DefaultClient
			if tc.h2 {
				gw.EnableHTTP2 = true
				gw.StartTLS()
				client = gw.Client()
			} else {
				gw.Start()
			}
			defer gw.Close()
			resp, body, err := clientGet(t, ctx, client, gw.URL+"/app.js", nil)
			if tc.h2 && resp.ProtoMajor != 2 {
				t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET = %d, want 200 (the first leaf came)", resp.StatusCode)
			}
			// Over HTTP/1.1 the connection is closed before the declared
			// length; over HTTP/2 the stream is reset, where a clean end
			// of stream would leave it to the client to count the bytes.
			switch {
			case !tc.h2 && !errors.Is(err, io.ErrUnexpectedEOF):
				t.Errorf("reading the body: %v after %d bytes, want unexpected EOF", err, len(body))
			case tc.h2 && (err == nil || !strings.Contains(err.Error(), "stream error")):
				t.Errorf("reading the body: %v after %d bytes, want the stream reset", err, len(body))
			}
			if len(body) >= len(s.Site()["app.js"]) || !bytes.Equal(body, s.Site()["app.js"][:len(body)]) {
				t.Errorf("got %d bytes, want a correct prefix of %d", len(body), len(s.Site()["app.js"]))
			}
		})
	}
}

// TestGatewayHost: a Host header that is not a loopback name, an IP
// literal or a configured name gets 403 (DNS rebinding: a page of
// evil.example whose name resolves to 127.0.0.1 cannot read the gateway).
func TestGatewayHost(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 100})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.URL()})
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), Hosts: []string{"App.Example"}}))
	defer gw.Close()
	for _, tc := range []struct {
		host string
		want int
	}{
		{"localhost", 200},
		{"localhost:8080", 200},
		{"LOCALHOST.:1", 200},
		{"app.localhost:9", 200},
		{"127.0.0.1:8080", 200},
		{"[::1]:8080", 200},
		{"[::1]", 200},
		{"app.example", 200},
		{"app.example:443", 200},
		{"evil.example", 403},
		{"evil.example:8080", 403},
		{"localhost.evil.example", 403},
		{"127.0.0.1.nip.io", 403},
		{"example", 403},
	} {
		req, err := http.NewRequestWithContext(ctx, "GET", gw.URL+"/index.html", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tc.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET with Host %q = %d, want %d", tc.host, resp.StatusCode, tc.want)
		}
		if tc.want == 200 && !bytes.Equal(body, s.Site()["index.html"]) {
			t.Errorf("GET with Host %q: wrong body", tc.host)
		}
	}
}

// TestGatewayManyRanges: more ranges than GatewayConfig.MaxRanges get the
// whole content (200), read once; up to the cap, a multipart answer whose
// parts are right, each leaf read once.
func TestGatewayManyRanges(t *testing.T) {
	const size = 3<<20 + 5
	s := newSite(t, map[string]int64{"v.mp4": size})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.URL()})
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest()}))
	defer gw.Close()
	data := s.Site()["v.mp4"]
	if _, body, err := gatewayGet(t, ctx, gw.URL+"/v.mp4", nil); err != nil || !bytes.Equal(body, data) {
		t.Fatalf("warming GET: %v, %d bytes", err, len(body))
	}

	// 20,000 one-byte ranges spread over the file, backwards.
	var specs []string
	for i := range 20000 {
		off := int64(size-1) - int64(i)*(size/20000)
		specs = append(specs, fmt.Sprintf("%d-%d", off, off))
	}
	before := n.Stats().Fetch.LocalBytes
	resp, body, err := gatewayGet(t, ctx, gw.URL+"/v.mp4", map[string]string{"Range": "bytes=" + strings.Join(specs, ",")})
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("20000 ranges = %d with %d bytes (%v), want 200 with the whole file", resp.StatusCode, len(body), err)
	}
	if got := n.Stats().Fetch.LocalBytes - before; got != size {
		t.Errorf("20000 ranges read %d bytes from the store, want each leaf once (%d)", got, size)
	}

	// 16 ranges, forward, several in one leaf, some overlapping.
	type rng struct{ start, end int64 }
	ranges := []rng{{0, 0}, {10, 20}, {15, 30}, {1000, 1000}, {1<<20 - 1, 1 << 20}, {1<<20 + 7, 1<<20 + 7}, {1<<20 + 9, 2<<20 + 3},
		{2<<20 + 4, 2<<20 + 4}, {2<<20 + 100, 2<<20 + 200}, {2<<20 + 300, 2<<20 + 300}, {3 << 20, 3<<20 + 1},
		{3<<20 + 2, 3<<20 + 2}, {3<<20 + 3, 3<<20 + 3}, {3<<20 + 4, 3<<20 + 4}, {3<<20 + 4, 3<<20 + 4}, {3<<20 + 1, 3<<20 + 4}}
	specs = specs[:0]
	for _, r := range ranges {
		specs = append(specs, fmt.Sprintf("%d-%d", r.start, r.end))
	}
	before = n.Stats().Fetch.LocalBytes
	resp, body, err = gatewayGet(t, ctx, gw.URL+"/v.mp4", map[string]string{"Range": "bytes=" + strings.Join(specs, ",")})
	if err != nil || resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("16 ranges = %d (%v), want 206", resp.StatusCode, err)
	}
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for i, r := range ranges {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		got, _ := io.ReadAll(part)
		if !bytes.Equal(got, data[r.start:r.end+1]) {
			t.Errorf("part %d (%d-%d) = %d bytes that differ from the file's", i, r.start, r.end, len(got))
		}
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("after 16 parts: %v, want the end", err)
	}
	if got := n.Stats().Fetch.LocalBytes - before; got != size {
		t.Errorf("16 forward ranges read %d bytes from the store, want each leaf once (%d)", got, size)
	}
}

// stalledGet sends GET path to the gateway at addr on a raw connection and
// reads nothing: a client that stops reading.
func stalledGet(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	return c
}

// liveHeap is the live heap after a collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// waitFor polls cond every 50 ms until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

// TestGatewayStalledReaders: clients that stop reading a 48 MiB asset give
// back their fetch's read-ahead window (32 MiB each) within seconds, so
// that six of them hold a few MiB of heap rather than 192; meanwhile the
// windows held at once stay within MaxBuffer (one window here); when the
// clients read on, each gets the whole file, right.
func TestGatewayStalledReaders(t *testing.T) {
	const size, clients = 48<<20 + 3, 6
	s := newSite(t, map[string]int64{"big.bin": size})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// On disk, as in use: every leaf read from badger is a copy on the heap
	// (the in-memory store hands out the stored slices themselves).
	n := newNode(t, mesh.Config{Origin: s.URL(), DataDir: t.TempDir()})
	const maxBuffer = 33 << 20 // one request's window (32 leaves) and buffer (1)
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), MaxBuffer: maxBuffer}))
	t.Cleanup(gw.Close) // after the stalled clients close: Close waits for their requests
	if _, body, err := gatewayGet(t, ctx, gw.URL+"/big.bin", nil); err != nil || !bytes.Equal(body, s.Site()["big.bin"]) {
		t.Fatalf("warming GET: %v, %d bytes", err, len(body))
	}
	base := liveHeap()
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), liveHeap()-base))
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	fetches := n.Stats().Fetch.Fetches
	var conns []net.Conn
	for range clients {
		conns = append(conns, stalledGet(t, gw.Listener.Addr().String(), "/big.bin"))
	}
	waitFor(ctx, t, "the stalled requests to start", func() bool { return n.Stats().Fetch.Fetches >= fetches+clients })
	const bound = clients * 4 << 20
	var extra int64
	settled := false
	defer func() {
		if !settled {
			t.Logf("%d stalled readers still hold %d MiB of heap", clients, extra>>20)
		}
	}()
	waitFor(ctx, t, "the stalled requests to give back their windows", func() bool {
		extra = liveHeap() - base
		return extra < bound
	})
	settled = true
	close(stop)
	<-sampled
	t.Logf("%d stalled readers hold %d KiB of heap, at most %d MiB on the way", clients, extra>>10, peak.Load()>>20)
	if p := peak.Load(); p > maxBuffer+clients<<20+32<<20 {
		t.Errorf("the stalled readers held up to %d MiB of heap, want at most MaxBuffer (%d MiB) and a little", p>>20, maxBuffer>>20)
	}

	for i, c := range conns {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(body, s.Site()["big.bin"]) {
			t.Errorf("client %d after its stall: %v, %d bytes of %d, equal %v", i, err, len(body), size, bytes.Equal(body, s.Site()["big.bin"]))
		}
	}
}

// TestGatewayStalledReaderYields: a client that stops reading holds the
// gateway's whole MaxBuffer, and another asks for a small file: the
// stalled request's fetch parks as soon as its write has blocked 0.1 s
// with the other waiting, not after a second, so the other gets its file
// within a FirstByteTimeout shorter than that second (it got 503 when
// only the second parked a fetch).
func TestGatewayStalledReaderYields(t *testing.T) {
	const size = 24<<20 + 3
	s := newSite(t, map[string]int64{"big.bin": size, "small.bin": 100 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.URL()})
	// MaxBuffer is what the big file's request takes: its fetch's window
	// (8 leaves) and one leaf.
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), MaxBuffer: 9 << 20, FirstByteTimeout: 700 * time.Millisecond}))
	t.Cleanup(gw.Close) // after the stalled client closes: Close waits for its request
	for _, p := range []string{"/big.bin", "/small.bin"} {
		if _, body, err := gatewayGet(t, ctx, gw.URL+p, nil); err != nil || len(body) == 0 {
			t.Fatalf("warming GET %s: %v, %d bytes", p, err, len(body))
		}
	}
	fetches := n.Stats().Fetch.Fetches
	stalledGet(t, gw.Listener.Addr().String(), "/big.bin")
	waitFor(ctx, t, "the stalled request to start", func() bool { return n.Stats().Fetch.Fetches > fetches })
	resp, body, err := gatewayGet(t, ctx, gw.URL+"/small.bin", nil)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, s.Site()["small.bin"]) {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("GET /small.bin beside a stalled reader holding MaxBuffer: %d, %d bytes (%v); want 200 with the file", code, len(body), err)
	}
}

// counterValues gathers reg's meshcdn_gateway_requests_total by class.
func counterValues(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "meshcdn_gateway_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return got
}

// TestGatewayWriteTimeout: a client that does not read for WriteTimeout is
// disconnected (counted as aborted), having had only part of the file.
func TestGatewayWriteTimeout(t *testing.T) {
	const size = 24<<20 + 3
	s := newSite(t, map[string]int64{"big.bin": size})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	n := newNode(t, mesh.Config{Origin: s.URL(), PrometheusRegisterer: reg})
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), WriteTimeout: time.Second}))
	t.Cleanup(gw.Close) // after the stalled clients close: Close waits for their requests
	c := stalledGet(t, gw.Listener.Addr().String(), "/big.bin")
	waitFor(ctx, t, "the stalled client to be cut off", func() bool { return counterValues(t, reg)["aborted"] == 1 })
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || len(body) >= size {
		t.Errorf("a client that stalled past the write timeout read %d of %d bytes (%v), want a cut transfer", len(body), size, err)
	}
}

// TestGatewayMetrics: requests are counted by status class on the node's
// registry, and two gateways of one node share the counter.
func TestGatewayMetrics(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 100, "a.css": 10})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	n := newNode(t, mesh.Config{Origin: s.URL(), PrometheusRegisterer: reg})
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest()}))
	defer gw.Close()
	gw2 := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest()}))
	defer gw2.Close()
	a, _ := s.Manifest().Lookup("a.css")
	for _, r := range []struct {
		url string
		hdr map[string]string
	}{
		{gw.URL + "/index.html", nil},
		{gw2.URL + "/a.css", nil},
		{gw.URL + "/a.css", map[string]string{"If-None-Match": `"` + a.Cid.String() + `"`}},
		{gw.URL + "/nope", nil},
		{gw2.URL + "/ipfs/nope", nil},
		{gw.URL + "/a.css", map[string]string{"Range": "bytes=100-"}},
	} {
		if _, _, err := gatewayGet(t, ctx, r.url, r.hdr); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]float64{"2xx": 2, "3xx": 1, "4xx": 3, "5xx": 0, "aborted": 0}
	if got := counterValues(t, reg); !maps.Equal(got, want) {
		t.Errorf("meshcdn_gateway_requests_total = %v, want %v", got, want)
	}
	// The counter goes with the node's other collectors at Close.
	gw.Close()
	gw2.Close()
	n.Close()
	if got := counterValues(t, reg); len(got) != 0 {
		t.Errorf("after Close meshcdn_gateway_requests_total = %v, want it unregistered", got)
	}
}

// TestGatewaySiteIpfsFolder: a site with a folder named ipfs (an IPFS
// project's docs) has its files served by path; /ipfs/CID still fetches
// by CID, and a path under /ipfs/ that is neither a CID nor a site file
// is a bad CID (400). Before, every path under /ipfs/ was read as a CID:
// the folder's files answered 400. The folder's files are cached as the
// site's (no-cache), not as content by CID (immutable).
func TestGatewaySiteIpfsFolder(t *testing.T) {
	b := startGatewayBed(t, map[string]int64{"index.html": 1500, "ipfs/guide.html": 900, "ipfs/docs/index.html": 700})
	s := b.s
	guide, _ := b.m.Lookup("ipfs/guide.html")
	docs, _ := b.m.Lookup("ipfs/docs/index.html")
	const immutable, mutable = "public, max-age=29030400, immutable", "no-cache"
	for _, tc := range []struct {
		path   string
		status int
		body   []byte
		cache  string // Cache-Control of a 200
	}{
		{"/ipfs/guide.html", http.StatusOK, s.Site()["ipfs/guide.html"], mutable},
		{"/ipfs/docs/", http.StatusOK, s.Site()["ipfs/docs/index.html"], mutable},
		{"/ipfs/docs", http.StatusOK, s.Site()["ipfs/docs/index.html"], mutable}, // redirected to /ipfs/docs/
		{"/ipfs/" + guide.Cid.String(), http.StatusOK, s.Site()["ipfs/guide.html"], immutable},
		{"/ipfs/" + docs.Cid.String() + "/", http.StatusOK, s.Site()["ipfs/docs/index.html"], immutable},
		{"/ipfs/nothing.html", http.StatusBadRequest, nil, ""},
	} {
		resp, body := b.do(t, http.MethodGet, tc.path, nil)
		if resp.StatusCode != tc.status || tc.body != nil && !bytes.Equal(body, tc.body) {
			t.Errorf("GET %s = %d with %d bytes, want %d with %d", tc.path, resp.StatusCode, len(body), tc.status, len(tc.body))
		}
		// A site file may change with the next version: cached as
		// immutable, a browser kept the old one for 336 days.
		if got := resp.Header.Get("Cache-Control"); tc.cache != "" && got != tc.cache {
			t.Errorf("GET %s: Cache-Control %q, want %q", tc.path, got, tc.cache)
		}
	}
}

// TestGatewayOriginSheddingLoad: an origin that answers an asset 503 with
// a Retry-After longer than a fetch waits (or 429) makes the gateway answer
// 503 with that Retry-After, so that a client comes back when the origin
// said; an origin that fails otherwise (500) still makes it 502.
func TestGatewayOriginSheddingLoad(t *testing.T) {
	b := startGatewayBed(t, map[string]int64{"index.html": 1500, "a.js": 2000, "b.js": 3000})
	for _, tc := range []struct {
		path       string
		fault      meshtest.Fault
		status     int
		retryAfter string
	}{
		{"/a.js", meshtest.Fault{Kind: meshtest.FaultStatus, Status: http.StatusServiceUnavailable, RetryAfter: "30"}, http.StatusServiceUnavailable, "30"},
		{"/b.js", meshtest.Fault{Kind: meshtest.FaultStatus, Status: http.StatusInternalServerError}, http.StatusBadGateway, ""},
	} {
		b.s.SetFault(func(*http.Request) meshtest.Fault { return tc.fault })
		resp, body := b.do(t, http.MethodGet, tc.path, nil)
		if resp.StatusCode != tc.status || resp.Header.Get("Retry-After") != tc.retryAfter {
			t.Errorf("GET %s with the origin answering %d = %d, Retry-After %q (%s); want %d, Retry-After %q",
				tc.path, tc.fault.Status, resp.StatusCode, resp.Header.Get("Retry-After"), body, tc.status, tc.retryAfter)
		}
	}
	b.s.SetFault(nil)
}

// TestGatewaySlowOrigin: an origin that keeps sending, slower than a leaf
// per FirstByteTimeout, is not cut: the gateway answers 200 with every
// byte. The timeout counts from the last
// byte that came, not from when the leaf was asked for (a 600 KiB file at
// 200 KiB/s got a 504 after the 1 s timeout, with 200 KiB of it come).
func TestGatewaySlowOrigin(t *testing.T) {
	s := meshtest.StartOrigin(t, meshtest.OriginConfig{
		Site:           meshtest.GenerateSite(1, map[string]int64{"slow.bin": 600 << 10}),
		BytesPerSecond: 200 << 10, Burst: 16 << 10,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.URL()})
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), FirstByteTimeout: time.Second}))
	defer gw.Close()
	start := time.Now()
	resp, body, err := gatewayGet(t, ctx, gw.URL+"/slow.bin", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET from a slow origin = %d (%v) %.80q after %v, want 200", resp.StatusCode, err, body, time.Since(start))
	}
	if want := s.Site()["slow.bin"]; !bytes.Equal(body, want) {
		t.Errorf("GET from a slow origin gave %d bytes, not the file's %d", len(body), len(want))
	}
}

// TestGatewaySlowOriginShared: two requests for the file of a slow origin,
// the second asked once the first's origin request is under way, share
// that request, and the second is not cut either: its timeout counts from
// the shared request's last bytes (it got 504 after the 1 s timeout, the
// first a 200).
func TestGatewaySlowOriginShared(t *testing.T) {
	s := meshtest.StartOrigin(t, meshtest.OriginConfig{
		Site:           meshtest.GenerateSite(1, map[string]int64{"slow.bin": 600 << 10}),
		BytesPerSecond: 200 << 10, Burst: 16 << 10,
	})
	asked := make(chan struct{})
	var once sync.Once
	s.SetFault(func(r *http.Request) meshtest.Fault {
		if strings.HasSuffix(r.URL.Path, "/slow.bin") {
			once.Do(func() { close(asked) })
		}
		return meshtest.Fault{}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.URL()})
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), FirstByteTimeout: time.Second}))
	defer gw.Close()
	codes := make(chan string, 2)
	get := func() { // not gatewayGet: its t.Fatal is for the test's goroutine
		req, err := http.NewRequestWithContext(ctx, "GET", gw.URL+"/slow.bin", nil)
		if err != nil {
			codes <- err.Error()
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			codes <- err.Error()
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		switch {
		case err != nil:
			codes <- fmt.Sprintf("%d, then %v", resp.StatusCode, err)
		case resp.StatusCode != http.StatusOK || !bytes.Equal(body, s.Site()["slow.bin"]):
			codes <- fmt.Sprintf("%d with %d bytes", resp.StatusCode, len(body))
		default:
			codes <- ""
		}
	}
	go get()
	<-asked
	go get()
	for range 2 {
		if c := <-codes; c != "" {
			t.Errorf("GET from a slow origin beside another = %s, want 200 with the file", c)
		}
	}
	if sent, size := s.Stats().Sent, int64(600<<10); sent > size+size/2 {
		t.Errorf("the origin sent %d bytes for a %d-byte file asked twice at once, want one request's", sent, size)
	}
}

// TestGatewaySmallRangeFailsBeforeHeaders: a ranged answer within two
// leaves has both read before its headers, so that the second failing is a
// 502 with its reason; it was an empty reply (the status line not yet
// flushed when the connection was cut). The origin here fails every Range
// request that does not start at 0, and no peer holds the file.
func TestGatewaySmallRangeFailsBeforeHeaders(t *testing.T) {
	b := startGatewayBed(t, map[string]int64{"index.html": 1500, "big.bin": 3 << 20})
	b.s.SetFault(func(r *http.Request) meshtest.Fault {
		if rg := r.Header.Get("Range"); rg != "" && !strings.HasPrefix(rg, "bytes=0-") {
			return meshtest.Fault{Kind: meshtest.FaultStatus, Status: http.StatusNotFound}
		}
		return meshtest.Fault{}
	})
	for _, rg := range []string{"bytes=1048570-1048580", "bytes=0-9,2097152-2097161"} {
		resp, body, err := gatewayGet(t, b.ctx, b.gw.URL+"/big.bin", map[string]string{"Range": rg})
		if err != nil || resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "404") {
			t.Errorf("GET Range %s with its second leaf failing = %d (%v) %.100q, want 502 naming the 404", rg, resp.StatusCode, err, body)
		}
	}
}

// TestGatewayRedirectUnderPrefix: mounted under http.StripPrefix, a
// directory asked for without its slash is redirected within the mount;
// the absolute Location it gave (/docs/) left the mount, a 404.
func TestGatewayRedirectUnderPrefix(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 1500, "docs/index.html": 700})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.URL()})
	mux := http.NewServeMux()
	mux.Handle("/assets/", http.StripPrefix("/assets", n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest()})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, body, err := gatewayGet(t, ctx, srv.URL+"/assets/docs?v=2", nil)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, s.Site()["docs/index.html"]) {
		t.Fatalf("GET /assets/docs = %d (%v) with %d bytes, want 200 with the docs index", resp.StatusCode, err, len(body))
	}
	if got := resp.Request.URL.RequestURI(); got != "/assets/docs/?v=2" {
		t.Errorf("redirected to %s, want /assets/docs/?v=2", got)
	}
}

// TestGatewayCidV0OfManifestAsset: /ipfs/ with the CIDv0 form (Qm…) of a
// manifest's dag-pb asset is the asset: fetched with the manifest's size,
// inner nodes and origin file. Compared by CID version too, it was fetched
// by CID alone, from peers only, and none held it: a 504.
func TestGatewayCidV0OfManifestAsset(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 1500, "big.bin": 2<<20 + 7})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.URL()})
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), FirstByteTimeout: 3 * time.Second}))
	defer gw.Close()
	a, _ := s.Manifest().Lookup("big.bin")
	v0 := cid.NewCidV0(a.Cid.Hash())
	resp, body, err := gatewayGet(t, ctx, gw.URL+"/ipfs/"+v0.String(), nil)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, s.Site()["big.bin"]) {
		t.Fatalf("GET /ipfs/%s = %d (%v) with %d bytes, want 200 with the asset", v0, resp.StatusCode, err, len(body))
	}
	if got := resp.Header.Get("Content-Type"); got != a.Type {
		t.Errorf("Content-Type %q, want the manifest's %q", got, a.Type)
	}
}

// TestGatewayCrossSite: a request a browser marks as sent by a page of
// another site gets 403 and fetches nothing (a page on the web could have
// the node fetch, keep and serve content of its choosing through an <img>
// pointing at 127.0.0.1, or time what it holds); the page's own requests,
// loopback origins and non-browser clients are served, and
// AllowCrossSite serves them all.
func TestGatewayCrossSite(t *testing.T) {
	s := newSite(t, map[string]int64{"a.bin": 3000})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.URL()})
	a, _ := s.Manifest().Lookup("a.bin")
	byCID := "/ipfs/" + a.Cid.String()
	get := func(gw *httptest.Server, p string, h map[string]string) int {
		resp, _, _ := gatewayGet(t, ctx, gw.URL+p, h)
		return resp.StatusCode
	}
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), Hosts: []string{"app.example"}}))
	defer gw.Close()
	for _, h := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost:3000"},
		{"Origin": "https://evil.example"},
		{"Origin": "null"},
		{"Origin": "http://localhost.evil.example"},
	} {
		for _, p := range []string{byCID, "/a.bin"} {
			if got := get(gw, p, h); got != http.StatusForbidden {
				t.Errorf("GET %s with %v = %d, want 403", p, h, got)
			}
		}
	}
	if f := n.Fetcher().Stats().Fetches; f != 0 {
		t.Errorf("cross-site requests started %d fetches, want none", f)
	}
	for _, h := range []map[string]string{
		nil,
		{"Sec-Fetch-Site": "same-origin"},
		{"Sec-Fetch-Site": "none"},
		{"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"},
		{"Origin": "http://localhost:3000"},
		{"Origin": "http://127.0.0.1:5"},
		{"Origin": "http://[::1]:5"},
		{"Origin": "http://app.example"},
		{"Origin": gw.URL},
	} {
		if got := get(gw, byCID, h); got != http.StatusOK {
			t.Errorf("GET %s with %v = %d, want 200", byCID, h, got)
		}
	}
	open := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.Manifest(), AllowCrossSite: true}))
	defer open.Close()
	if got := get(open, byCID, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "null"}); got != http.StatusOK {
		t.Errorf("GET %s cross-site with AllowCrossSite = %d, want 200", byCID, got)
	}
}
