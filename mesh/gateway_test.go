package mesh_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/mesh"
)

func TestGateway(t *testing.T) {
	s := newSite(t, map[string]int64{"index.html": 1500, "css/site.css": 800, "video/v.mp4": 3<<20 + 11})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := newNode(t, mesh.Config{Origin: s.URL()})
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
		if resp.StatusCode != 200 || !bytes.Equal(body, s.Site()["video/v.mp4"]) {
			t.Fatalf("GET = %d with %d bytes, want 200 with the file", resp.StatusCode, len(body))
		}
		if resp.Header.Get("Etag") != etag || resp.Header.Get("Content-Type") != video.Type {
			t.Errorf("headers: ETag %q type %q, want %q %q", resp.Header.Get("Etag"), resp.Header.Get("Content-Type"), etag, video.Type)
		}
	})
	t.Run("range across a leaf boundary", func(t *testing.T) {
		resp, body := do("GET", "/video/v.mp4", map[string]string{"Range": "bytes=1048000-1049999"})
		want := s.Site()["video/v.mp4"][1048000:1050000]
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want) {
			t.Fatalf("Range GET = %d with %d bytes, want 206 with 2000", resp.StatusCode, len(body))
		}
	})
	t.Run("suffix range", func(t *testing.T) {
		resp, body := do("GET", "/video/v.mp4", map[string]string{"Range": "bytes=-11"})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, s.Site()["video/v.mp4"][3<<20:]) {
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
		if resp.StatusCode != 200 || !bytes.Equal(body, s.Site()["index.html"]) {
			t.Fatalf("GET / = %d", resp.StatusCode)
		}
	})
	t.Run("by cid", func(t *testing.T) {
		resp, body := do("GET", "/ipfs/"+video.Cid.String(), map[string]string{"Range": "bytes=5-9"})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, s.Site()["video/v.mp4"][5:10]) {
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
