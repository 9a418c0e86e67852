package mesh_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
)

// diffBed is a site in a directory, served by http.FileServer as the
// origin, and a node's gateway over it: the same requests to both should
// get the same answers, but for the gateway's documented choices.
type diffBed struct {
	ctx    context.Context
	dir    string
	files  map[string][]byte
	origin *httptest.Server
	n      *mesh.Node
	m      *manifest.Manifest
	gw     *httptest.Server
}

// diffSite is the site of the differential tests: files of sizes around a
// leaf, names to escape, indexes and the types a browser cares about.
func diffSite() map[string][]byte {
	text := func(n int) []byte { return bytes.Repeat([]byte("meshcdn "), n/8+1)[:n] }
	bin := func(seed byte, n int) []byte {
		b := make([]byte, n)
		x := uint32(seed)*2654435761 + 1
		for i := range b {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x)
		}
		return b
	}
	return map[string][]byte{
		"index.html":           []byte("<!doctype html><title>root</title>\n"),
		"docs/index.html":      []byte("<!doctype html><title>docs</title>\n"),
		"empty.txt":            {},
		"one.txt":              []byte("x"),
		"mib.bin":              bin(1, 1<<20),
		"mib1.bin":             bin(2, 1<<20+1),
		"video/clip.mp4":       bin(3, 3<<20+5),
		"LICENSE":              text(3000),
		"noext":                bin(4, 700),
		"app.js":               text(900),
		"data.json":            []byte(`{"a":1}`),
		"logo.svg":             []byte(`<svg xmlns="http://www.w3.org/2000/svg"></svg>`),
		"mod.wasm":             append([]byte("\x00asm\x01\x00\x00\x00"), bin(5, 100)...),
		"sp ace/ü 100% ?#.css": text(200),
	}
}

// newDiffBed writes the site and its manifest to a directory and starts
// the origin (http.FileServer, through wrap unless it is nil), a node and
// its gateway.
func newDiffBed(t *testing.T, wrap func(http.Handler) http.Handler) *diffBed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	b := &diffBed{ctx: ctx, dir: t.TempDir(), files: diffSite()}
	for p, data := range b.files {
		name := filepath.Join(b.dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := manifest.FromDir(ctx, b.dir, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "manifest.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	origin := http.FileServer(http.Dir(b.dir))
	if wrap != nil {
		origin = wrap(origin)
	}
	b.origin = httptest.NewServer(origin)
	t.Cleanup(b.origin.Close)
	b.n = newNode(t, mesh.Config{Origin: b.origin.URL})
	if b.m, err = b.n.LoadManifest(ctx, "manifest.json"); err != nil {
		t.Fatal(err)
	}
	b.gw = httptest.NewServer(b.n.Gateway(mesh.GatewayConfig{Manifest: b.m}))
	t.Cleanup(b.gw.Close)
	return b
}

// answer is what a server answered, as far as the comparison goes.
type answer struct {
	status int
	hdr    http.Header
	body   []byte
	err    error
}

// ask sends a request to base+path without following redirects.
func (b *diffBed) ask(t *testing.T, base, method, path string, hdr map[string]string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(b.ctx, method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	resp.Header.Set("X-Content-Length", fmt.Sprint(resp.ContentLength))
	return answer{status: resp.StatusCode, hdr: resp.Header, body: body, err: err}
}

// rangeParts reads a multipart/byteranges body into "Content-Range: bytes" lines.
func rangeParts(a answer) string {
	_, params, err := mime.ParseMediaType(a.hdr.Get("Content-Type"))
	if err != nil {
		return "bad type: " + err.Error()
	}
	r := multipart.NewReader(bytes.NewReader(a.body), params["boundary"])
	var out []string
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "bad multipart: " + err.Error()
		}
		data, _ := io.ReadAll(p)
		out = append(out, fmt.Sprintf("%s %s %x", p.Header.Get("Content-Range"), p.Header.Get("Content-Type"), data))
	}
	return strings.Join(out, "\n")
}

var diffHeaders = []string{"Content-Type", "X-Content-Length", "Content-Range", "Accept-Ranges", "Allow", "Location"}

// compare reports the differences of two answers.
func compare(o, g answer) []string {
	var d []string
	if (o.err == nil) != (g.err == nil) {
		return []string{fmt.Sprintf("error: origin %v, gateway %v", o.err, g.err)}
	}
	if o.status != g.status {
		d = append(d, fmt.Sprintf("status: origin %d, gateway %d", o.status, g.status))
	}
	for _, h := range diffHeaders {
		ov, gv := o.hdr.Get(h), g.hdr.Get(h)
		if h == "Content-Type" && strings.HasPrefix(ov, "multipart/") && strings.HasPrefix(gv, "multipart/") {
			continue
		}
		if ov != gv {
			d = append(d, fmt.Sprintf("%s: origin %q, gateway %q", h, ov, gv))
		}
	}
	if strings.HasPrefix(o.hdr.Get("Content-Type"), "multipart/") {
		if po, pg := rangeParts(o), rangeParts(g); po != pg {
			d = append(d, "multipart parts differ:\norigin:\n"+po+"\ngateway:\n"+pg)
		}
	} else if o.status < 300 && !bytes.Equal(o.body, g.body) {
		d = append(d, fmt.Sprintf("body: origin %d bytes, gateway %d bytes", len(o.body), len(g.body)))
	}
	return d
}

// diffRanges are the Range headers TestGatewayMatchesFileServer sends:
// single, suffix, open, around the 1 MiB leaf boundary, past the end,
// multi-range, overlapping and malformed. Suffixes of length zero, which
// http.FileServer answers wrongly, are TestGatewayEmptySuffixRange's.
var diffRanges = []string{
	"bytes=0-0", "bytes=-1", "bytes=-5", "bytes=0-", "bytes=1-", "bytes=1048575-", "bytes=1048576-",
	"bytes=1048576-1048576", "bytes=5000000-", "bytes=0-1,3-4", "bytes=0-10,5-15", "bytes=x",
	"bytes=5-3", "bytes=0-0,-1", "items=0-1", "bytes=0-99999999999", "bytes=1048570-1048580,10-20",
	"bytes= 0-3", "bytes=3145728-3145732,0-2,1048576-1048578", "bytes=0-0,,1-1", "bytes=0-0, x",
}

// TestGatewayMatchesFileServer sends the same requests to the gateway and
// to http.FileServer serving the site's directory (the origin), and wants
// the same status, bytes and headers that clients act on. Left out are
// the gateway's documented choices: ETags from CIDs, no Last-Modified, no
// directory listings, GET and HEAD only, /index.html served rather than
// redirected, and more than 16 ranges answered whole.
func TestGatewayMatchesFileServer(t *testing.T) {
	b := newDiffBed(t, nil)
	type request struct {
		method, path string
		hdr          map[string]string
	}
	var reqs []request
	for p := range b.files {
		if path.Base(p) == "index.html" {
			continue // http.FileServer redirects it to ./
		}
		segs := strings.Split(p, "/")
		for i, s := range segs {
			segs[i] = url.PathEscape(s)
		}
		esc := "/" + strings.Join(segs, "/")
		for _, m := range []string{"GET", "HEAD"} {
			reqs = append(reqs, request{m, esc, nil}, request{m, esc + "?q=1&x=%2F", nil})
			for _, r := range diffRanges {
				reqs = append(reqs, request{m, esc, map[string]string{"Range": r}})
			}
		}
	}
	for _, p := range []string{"/", "/docs/", "/nope", "/video%2Fclip.mp4", "/sp%20ace/nope.css"} {
		reqs = append(reqs, request{"GET", p, nil}, request{"HEAD", p, nil})
	}
	for _, r := range reqs {
		o := b.ask(t, b.origin.URL, r.method, r.path, r.hdr)
		g := b.ask(t, b.gw.URL, r.method, r.path, r.hdr)
		if d := compare(o, g); len(d) > 0 {
			t.Errorf("%s %s %v:\n\t%s", r.method, r.path, r.hdr, strings.Join(d, "\n\t"))
		}
	}
}

// TestGatewayEmptySuffixRange asks for the last 0 bytes of a file, which
// RFC 9110 (section 14.1.1) calls unsatisfiable: alone, the answer is 416
// with the file's size, as for a range past the end; beside a satisfiable
// range, that range alone is sent. (http.ServeContent, and so
// http.FileServer, answers "bytes=-0" 206 with "Content-Range: bytes
// 5-4/5", which no client can act on.)
func TestGatewayEmptySuffixRange(t *testing.T) {
	b := newDiffBed(t, nil)
	for _, p := range []string{"app.js", "video/clip.mp4"} {
		a, _ := b.m.Lookup(p)
		size := len(b.files[p])
		for _, u := range []string{"/" + p, "/ipfs/" + a.Cid.String()} {
			for _, h := range []string{"bytes=-0", "bytes=-00, -0", "bytes=-0,"} {
				got := b.ask(t, b.gw.URL, "GET", u, map[string]string{"Range": h})
				if want := fmt.Sprintf("bytes */%d", size); got.status != http.StatusRequestedRangeNotSatisfiable || got.hdr.Get("Content-Range") != want {
					t.Errorf("GET %s Range %q = %d, Content-Range %q; want 416, %q", u, h, got.status, got.hdr.Get("Content-Range"), want)
				}
			}
			got := b.ask(t, b.gw.URL, "GET", u, map[string]string{"Range": "bytes=-0,1-2,-0"})
			want := fmt.Sprintf("bytes 1-2/%d", size)
			if got.status != http.StatusPartialContent || got.hdr.Get("Content-Range") != want || !bytes.Equal(got.body, b.files[p][1:3]) {
				t.Errorf("GET %s Range bytes=-0,1-2,-0 = %d, Content-Range %q, %d bytes; want 206, %q, bytes 1-2", u, got.status, got.hdr.Get("Content-Range"), len(got.body), want)
			}
		}
	}
}

// TestGatewayIfNoneMatchAsServeContent sends If-None-Match headers that
// name the file's ETag after something net/http does not read as an
// entity-tag: the answer is a 304 or the whole file (http.ServeContent
// stops at the malformed entry and sends it), never a 200 with no body,
// which a cache would keep as the content under the file's ETag.
func TestGatewayIfNoneMatchAsServeContent(t *testing.T) {
	b := newDiffBed(t, nil)
	for _, p := range []string{"app.js", "video/clip.mp4"} {
		a, _ := b.m.Lookup(p)
		etag := `"` + a.Cid.String() + `"`
		for _, inm := range []string{"bogus, " + etag, `"a b", ` + etag, "W/ " + etag} {
			for _, u := range []string{"/" + p, "/ipfs/" + a.Cid.String()} {
				got := b.ask(t, b.gw.URL, "GET", u, map[string]string{"If-None-Match": inm})
				whole := got.status == http.StatusOK && bytes.Equal(got.body, b.files[p])
				if got.status != http.StatusNotModified && !whole {
					t.Errorf("GET %s with If-None-Match %s = %d with %d bytes, want 304 or 200 with %d", u, inm, got.status, len(got.body), len(b.files[p]))
				}
			}
		}
	}
}

// TestGatewayByCIDSniffsContent asks a gateway without a manifest for
// small files by CID: their size comes from the fetch, and the Content-Type
// is sniffed from their bytes alone, as http.FileServer sniffs a file with
// no extension (not from the rest of a 1 MiB leaf buffer: "x" is text, not
// application/octet-stream).
func TestGatewayByCIDSniffsContent(t *testing.T) {
	b := newDiffBed(t, nil)
	if err := b.n.Pin(b.ctx, b.m); err != nil {
		t.Fatal(err)
	}
	bare := httptest.NewServer(b.n.Gateway(mesh.GatewayConfig{}))
	defer bare.Close()
	for _, p := range []string{"one.txt", "data.json", "LICENSE", "noext", "empty.txt"} {
		a, _ := b.m.Lookup(p)
		for _, m := range []string{"GET", "HEAD"} {
			got := b.ask(t, bare.URL, m, "/ipfs/"+a.Cid.String(), nil)
			want := http.DetectContentType(b.files[p])
			if got.status != 200 || got.hdr.Get("Content-Type") != want || got.hdr.Get("X-Content-Length") != fmt.Sprint(len(b.files[p])) {
				t.Errorf("%s /ipfs/CID of %s = %d, type %q, length %s; want 200, %q, %d", m, p, got.status, got.hdr.Get("Content-Type"), got.hdr.Get("X-Content-Length"), want, len(b.files[p]))
			}
			if m == "GET" && !bytes.Equal(got.body, b.files[p]) {
				t.Errorf("GET /ipfs/CID of %s: %d bytes, not the file's %d", p, len(got.body), len(b.files[p]))
			}
		}
	}
}

// TestGatewayIfRangeStaleFetchesFromStart asks for a range of the video
// that will be answered with the whole file (an If-Range naming another
// version, ranges adding up to more than the file, more than MaxRanges),
// from an origin that fails the video's first leaf: the whole file's first
// bytes are those of leaf 0, and the gateway must answer 502 before any
// header, not a 200 and a cut connection after priming the range's leaf.
func TestGatewayIfRangeStaleFetchesFromStart(t *testing.T) {
	b := newDiffBed(t, func(fs http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/video/clip.mp4" && strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
				http.Error(w, "leaf 0 is lost", http.StatusInternalServerError)
				return
			}
			fs.ServeHTTP(w, r)
		})
	})
	a, _ := b.m.Lookup("video/clip.mp4")
	for _, hdr := range []map[string]string{
		{"Range": "bytes=2097152-2097160", "If-Range": `"stale"`},
		{"Range": "bytes=2097152-2097160", "If-Range": `W/"` + a.Cid.String() + `"`},
		{"Range": "bytes=2097152-2097160", "If-Range": "Mon, 02 Jan 2006 15:04:05 GMT"},
		{"Range": "bytes=1048576-,1048576-,1048576-"},                        // more than the file: sent whole
		{"Range": "bytes=2097152-2097160" + strings.Repeat(",9999999-", 16)}, // more than MaxRanges
	} {
		got := b.ask(t, b.gw.URL, "GET", "/video/clip.mp4", hdr)
		if got.status != http.StatusBadGateway {
			t.Errorf("GET %v with leaf 0 lost = %d (%v), want 502", hdr, got.status, got.err)
		}
	}
	got := b.ask(t, b.gw.URL, "GET", "/video/clip.mp4", map[string]string{"Range": "bytes=2097152-2097160", "If-Range": `"` + a.Cid.String() + `"`})
	if got.status != http.StatusPartialContent || !bytes.Equal(got.body, b.files["video/clip.mp4"][2097152:2097161]) {
		t.Errorf("GET with the current If-Range = %d with %d bytes, want 206 with 9", got.status, len(got.body))
	}
}
