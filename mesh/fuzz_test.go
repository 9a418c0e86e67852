package mesh_test

import (
	"bytes"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/internal/testutil"
	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/mesh"
	"github.com/meshcdn/meshcdn/meshtest"
)

// fuzzSite is a node holding a small site, and its gateway.
type fuzzSite struct {
	gw    *mesh.Gateway // for content the node holds
	cold  *mesh.Gateway // for content it cannot get: answers 504 at once
	m     *manifest.Manifest
	files map[string][]byte
}

func newFuzzSite(f *testing.F) *fuzzSite {
	f.Helper()
	s := &fuzzSite{files: map[string][]byte{
		"index.html":      testutil.Bytes(1, 300),
		"v.bin":           testutil.Bytes(2, 2<<20+77),
		"d/e f.txt":       []byte("ten bytes!"),
		"empty.txt":       {},
		"css/site.css":    testutil.Bytes(3, 4000),
		"docs/index.html": testutil.Bytes(4, 200),
	}}
	origin := meshtest.StartOrigin(f, meshtest.OriginConfig{Site: s.files})
	m := origin.Manifest()
	s.m = m
	n, err := mesh.New(context.Background(), mesh.Config{Name: "fuzz", InMemory: true, Origin: origin.URL(),
		ListenAddrs: mesh.LoopbackAddrs(mesh.RoleApp), MDNS: mesh.Off, NATPortMap: mesh.Off})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	warm := n.Gateway(mesh.GatewayConfig{Manifest: m})
	for _, a := range m.Assets {
		// Fetched once, so that the fuzzing reads from the store. (Not
		// with Node.Pin: it cannot pin the empty file, see the report.)
		req := httptest.NewRequest("GET", "/", nil)
		req.URL.Path, req.Host, req.RemoteAddr = "/"+a.Path, "localhost", "127.0.0.1:5555"
		rec := httptest.NewRecorder()
		warm.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), s.files[a.Path]) {
			f.Fatalf("GET %s = %d", a.Path, rec.Code)
		}
	}
	s.gw = warm
	// Content the node does not hold, asked by CID, waits for no peer long.
	s.cold = n.Gateway(mesh.GatewayConfig{Manifest: m, FirstByteTimeout: 50 * time.Millisecond})
	return s
}

// want resolves a request path as the gateway documents it: the asset's
// bytes, or the status of a request that gets none.
func (s *fuzzSite) want(p string) (data []byte, etag string, status int) {
	if rest, ok := strings.CutPrefix(p, "/ipfs/"); ok {
		c, err := cid.Decode(strings.TrimSuffix(rest, "/"))
		if err != nil {
			return nil, "", http.StatusBadRequest
		}
		if p := c.Prefix(); (p.MhType != mh.SHA2_256 || p.MhLength != 32) && p.MhType != mh.IDENTITY {
			return nil, "", http.StatusBadRequest // never verifiable, or forgeable
		}
		if c.Type() != cid.Raw && c.Type() != cid.DagProtobuf {
			return nil, "", http.StatusBadRequest // no UnixFS file
		}
		if p := c.Prefix(); p.MhType == mh.IDENTITY && c.Type() == cid.Raw {
			d, _ := mh.Decode(c.Hash())
			return d.Digest, `"` + c.String() + `"`, 0 // the CID holds its bytes
		}
		for _, a := range s.m.Assets {
			if a.Cid.Equals(c) {
				return s.files[a.Path], `"` + c.String() + `"`, 0
			}
		}
		return nil, "", http.StatusGatewayTimeout
	}
	rel := strings.TrimPrefix(p, "/")
	if rel == "" || strings.HasSuffix(rel, "/") {
		rel += "index.html"
	}
	if manifest.CheckPath(rel) != nil {
		return nil, "", http.StatusBadRequest
	}
	a, ok := s.m.Lookup(rel)
	if !ok {
		if _, dir := s.m.Lookup(rel + "/index.html"); dir {
			return nil, "", http.StatusFound // to the directory's slash
		}
		return nil, "", http.StatusNotFound
	}
	return s.files[a.Path], `"` + a.Cid.String() + `"`, 0
}

// FuzzGateway sends fuzzed paths, Range headers and conditions to the
// gateway of a node holding a small site. Every answer must be what the
// gateway documents: 400 for unsafe paths and bad CIDs, 404 for paths the
// manifest lacks, 302 to the slash for a directory with an index.html, and
// for an asset exactly what http.ServeContent gives
// over its true bytes (status, length, every byte of every part), with a
// Range of more than DefaultGatewayMaxRanges ranges ignored.
func FuzzGateway(f *testing.F) {
	s := newFuzzSite(f)
	v, _ := s.m.Lookup("v.bin")
	for _, seed := range []struct {
		path, rng string
		inm, head bool
	}{
		{"/index.html", "", false, false},
		{"/", "bytes=0-9", false, false},
		{"/v.bin", "bytes=1048570-1048580", false, false},
		{"/v.bin", "bytes=-5,0-0,1048576-1048577", false, false},
		{"/v.bin", "bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8,9-9,10-10,11-11,12-12,13-13,14-14,15-15,16-16", false, false},
		{"/v.bin", "bytes=5-", true, false},
		{"/v.bin", "bytes=-0,1-2,- +00", false, false},
		{"/v.bin", "bytes=--0,0-1", false, false},
		{"/d/e f.txt", "bytes=3-100", false, true},
		{"/empty.txt", "bytes=0-", false, false},
		{"/ipfs/" + v.Cid.String(), "bytes=+1-+2", false, false},
		{"/ipfs/" + v.Cid.String() + "/", "bytes=99999999999-", false, false},
		{"/ipfs/bafkqaaa", "", false, false},
		{"/ipfs/bafkqablimvwgy3y", "bytes=1-2", true, false}, // identity: "hello"
		{"/ipfs/bafyqaaa", "", false, false},                 // dag-cbor
		{"/ipfs/not-a-cid", "", false, false},
		{"/css/../../etc/passwd", "", false, false},
		{"/css//site.css", "bytes=1-2", false, false},
		{"/css/", "", false, false},
		{"/docs", "", false, true},
		{"/docs/", "bytes=0-3", false, false},
	} {
		f.Add(seed.path, seed.rng, seed.inm, seed.head)
	}
	f.Fuzz(func(t *testing.T, p, rng string, inm, head bool) {
		data, etag, status := s.want(p)
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		req := httptest.NewRequest(method, "/", nil)
		req.URL.Path, req.URL.RawPath = p, ""
		req.Host, req.RemoteAddr = "127.0.0.1:8080", "127.0.0.1:5555"
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		if inm && etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		rec := httptest.NewRecorder()
		gw := s.gw
		if status == http.StatusGatewayTimeout {
			gw = s.cold
		}
		gw.ServeHTTP(rec, req)
		if status != 0 {
			if rec.Code != status {
				t.Fatalf("%s %q = %d, want %d: %s", method, p, rec.Code, status, rec.Body.String())
			}
			if loc := "./" + path.Base((&url.URL{Path: p}).EscapedPath()) + "/"; status == http.StatusFound && rec.Header().Get("Location") != loc {
				t.Fatalf("%s %q: Location %q, want %q", method, p, rec.Header().Get("Location"), loc)
			}
			return
		}

		checkLikeServeContent(t, req, rec, data, etag)
	})
}

// checkLikeServeContent checks the gateway's answer rec to req, for an
// asset of the bytes data and the ETag etag, against the reference:
// http.ServeContent over data (with a Range of more than
// DefaultGatewayMaxRanges ranges ignored). Status, Content-Length and every
// byte of every part must agree; a HEAD answer has no body.
func checkLikeServeContent(t *testing.T, req *http.Request, rec *httptest.ResponseRecorder, data []byte, etag string) {
	t.Helper()
	method, p, rng, head := req.Method, req.URL.Path, req.Header.Get("Range"), req.Method == http.MethodHead
	// The reference: ServeContent over the asset's true bytes.
	ref := req.Clone(context.Background())
	if countSpecs(rng) > mesh.DefaultGatewayMaxRanges {
		ref.Header.Del("Range")
	} else if rng != "" {
		ref.Header.Set("Range", withoutEmptySuffixes(rng))
	}
	refRec := httptest.NewRecorder()
	refRec.Header().Set("Etag", etag)
	http.ServeContent(refRec, ref, "", time.Time{}, bytes.NewReader(data))
	if rec.Code != refRec.Code {
		t.Fatalf("%s %q Range %q = %d, ServeContent says %d", method, p, rng, rec.Code, refRec.Code)
	}
	if rec.Code != http.StatusOK && rec.Code != http.StatusPartialContent {
		return
	}
	if got, want := rec.Header().Get("Content-Length"), refRec.Header().Get("Content-Length"); got != want {
		t.Fatalf("%s %q Range %q: Content-Length %s, want %s", method, p, rng, got, want)
	}
	if head {
		if rec.Body.Len() != 0 {
			t.Fatalf("HEAD %q: %d bytes of body", p, rec.Body.Len())
		}
		return
	}
	gotParts, err1 := parts(rec)
	wantParts, err2 := parts(refRec)
	if err1 != nil || err2 != nil || len(gotParts) != len(wantParts) {
		t.Fatalf("%s %q Range %q: %d parts (%v), want %d (%v)", method, p, rng, len(gotParts), err1, len(wantParts), err2)
	}
	for i := range gotParts {
		if !bytes.Equal(gotParts[i], wantParts[i]) {
			t.Fatalf("%s %q Range %q: part %d differs from the content's bytes", method, p, rng, i)
		}
	}
}

// emptySuffix is a suffix range of length zero as ServeContent reads one.
var emptySuffix = regexp.MustCompile(`^[ \t]*-[ \t]*\+?0+[ \t]*$`)

// withoutEmptySuffixes is what RFC 9110 makes of a Range header's suffixes
// of length zero: they are unsatisfiable, left out beside others, and a
// header of nothing else is answered 416 (as a range past any end is).
func withoutEmptySuffixes(h string) string {
	specs, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return h
	}
	var kept []string
	for _, s := range strings.Split(specs, ",") {
		if !emptySuffix.MatchString(s) {
			kept = append(kept, s)
		}
	}
	switch {
	case len(kept) == len(strings.Split(specs, ",")):
		return h
	case countSpecs(strings.Join(kept, ",")) == 0:
		return "bytes=999999999999999-"
	}
	return "bytes=" + strings.Join(kept, ",")
}

// countSpecs counts the comma-separated items of a Range header.
func countSpecs(h string) int {
	n := 0
	for _, s := range strings.Split(h, ",") {
		if strings.TrimSpace(s) != "" {
			n++
		}
	}
	return n
}

// parts returns a response's body, or each part of a multipart one with
// its Content-Range header in front.
func parts(rec *httptest.ResponseRecorder) ([][]byte, error) {
	typ, params, err := mime.ParseMediaType(rec.Header().Get("Content-Type"))
	if err != nil || typ != "multipart/byteranges" {
		return [][]byte{rec.Body.Bytes()}, nil
	}
	var out [][]byte
	mr := multipart.NewReader(bytes.NewReader(rec.Body.Bytes()), params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		b, err := io.ReadAll(part)
		if err != nil {
			return out, err
		}
		out = append(out, append([]byte(part.Header.Get("Content-Range")+"\n"), b...))
	}
}
