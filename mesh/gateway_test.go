package mesh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
)

func TestGateway(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 1500, "css/site.css": 800, "video/v.mp4": 3<<20 + 11})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.srv.URL})
	m, err := n.LoadManifest(ctx, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: m}))
	defer gw.Close()
	video, _ := m.Lookup("video/v.mp4")
	etag := `"` + video.Cid.String() + `"`

	do := func(method, path string, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, gw.URL+path, nil)
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

	t.Run("whole file by path", func(t *testing.T) {
		resp, body := do("GET", "/video/v.mp4", nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, s.files["video/v.mp4"]) {
			t.Fatalf("GET = %d with %d bytes, want 200 with the file", resp.StatusCode, len(body))
		}
		if resp.Header.Get("Etag") != etag || resp.Header.Get("Content-Type") != video.Type {
			t.Errorf("headers: ETag %q type %q, want %q %q", resp.Header.Get("Etag"), resp.Header.Get("Content-Type"), etag, video.Type)
		}
	})
	t.Run("range across a leaf boundary", func(t *testing.T) {
		resp, body := do("GET", "/video/v.mp4", map[string]string{"Range": "bytes=1048000-1049999"})
		want := s.files["video/v.mp4"][1048000:1050000]
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want) {
			t.Fatalf("Range GET = %d with %d bytes, want 206 with 2000", resp.StatusCode, len(body))
		}
	})
	t.Run("suffix range", func(t *testing.T) {
		resp, body := do("GET", "/video/v.mp4", map[string]string{"Range": "bytes=-11"})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, s.files["video/v.mp4"][3<<20:]) {
			t.Fatalf("suffix Range = %d %d bytes", resp.StatusCode, len(body))
		}
	})
	t.Run("if-none-match", func(t *testing.T) {
		resp, body := do("GET", "/video/v.mp4", map[string]string{"If-None-Match": etag})
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Fatalf("If-None-Match = %d with %d bytes, want 304", resp.StatusCode, len(body))
		}
	})
	t.Run("head", func(t *testing.T) {
		resp, body := do("HEAD", "/css/site.css", nil)
		if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != 800 {
			t.Fatalf("HEAD = %d, %d bytes, length %d", resp.StatusCode, len(body), resp.ContentLength)
		}
	})
	t.Run("index", func(t *testing.T) {
		resp, body := do("GET", "/", nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, s.files["index.html"]) {
			t.Fatalf("GET / = %d", resp.StatusCode)
		}
	})
	t.Run("by cid", func(t *testing.T) {
		resp, body := do("GET", "/ipfs/"+video.Cid.String(), map[string]string{"Range": "bytes=5-9"})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, s.files["video/v.mp4"][5:10]) {
			t.Fatalf("GET /ipfs/CID = %d %q", resp.StatusCode, body)
		}
	})
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/nope.html", 404},
		{"/ipfs/not-a-cid", 400},
		{"/../../etc/passwd", 400},
		{"/css/..%2f..%2fetc%2fpasswd", 400},
		{"/css/%2e%2e/%2e%2e/etc/passwd", 400},
		{"/a//b", 400},
	} {
		t.Run("bad "+tc.path, func(t *testing.T) {
			resp, _ := do("GET", tc.path, nil)
			if resp.StatusCode != tc.want {
				t.Errorf("GET %s = %d, want %d", tc.path, resp.StatusCode, tc.want)
			}
		})
	}
	t.Run("method", func(t *testing.T) {
		resp, _ := do("POST", "/index.html", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST = %d, want 405", resp.StatusCode)
		}
	})
	t.Run("remote client refused", func(t *testing.T) {
		req := httptest.NewRequest("GET", "/index.html", nil)
		req.RemoteAddr = "192.0.2.7:5555" // never dialled: the handler only reads it
		req.Host = "192.0.2.1:8080"       // the gateway's own LAN address
		rec := httptest.NewRecorder()
		n.Gateway(mesh.GatewayConfig{Manifest: m}).ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("non-loopback client = %d, want 403", rec.Code)
		}
		rec = httptest.NewRecorder()
		n.Gateway(mesh.GatewayConfig{Manifest: m, AllowRemote: true}).ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("non-loopback client with AllowRemote = %d, want 200", rec.Code)
		}
	})
}

// hungOrigin is an origin that accepts connections and never answers.
func hungOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String()
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
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err = http.DefaultClient.Do(req)
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
	gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.m, FirstByteTimeout: timeout}))
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
			gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.m}))
			defer gw.Close()
			resp, body, err := gatewayGet(t, ctx, gw.URL+"/app.js", tc.hdr)
			if err != nil || resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("GET = %d with %d bytes (%v), want 502", resp.StatusCode, len(body), err)
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
// a broken transfer (unexpected EOF), never a body that ends cleanly short.
func TestGatewayAbortsMidBody(t *testing.T) {
	s := newSite(t, map[string]int64{"app.js": 3<<20 + 5})
	for _, hang := range []bool{false, true} {
		t.Run(fmt.Sprintf("hang=%v", hang), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n := newNode(t, mesh.Config{Origin: dyingOrigin(t, s.files["app.js"], hang)})
			gw := httptest.NewServer(n.Gateway(mesh.GatewayConfig{Manifest: s.m, FirstByteTimeout: time.Second}))
			defer gw.Close()
			resp, body, err := gatewayGet(t, ctx, gw.URL+"/app.js", nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET = %d, want 200 (the first leaf came)", resp.StatusCode)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("reading the body: %v after %d bytes, want unexpected EOF", err, len(body))
			}
			if len(body) >= len(s.files["app.js"]) || !bytes.Equal(body, s.files["app.js"][:len(body)]) {
				t.Errorf("got %d bytes, want a correct prefix of %d", len(body), len(s.files["app.js"]))
			}
		})
	}
}
