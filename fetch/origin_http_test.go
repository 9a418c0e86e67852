package fetch_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/meshcdn/meshcdn/fetch"
)

// fetchFrom fetches tg from a fresh node with no peer, under a deadline
// well past the fetch's own timeouts, and returns what it read and its
// error; t fails if the fetch did not end by itself.
func fetchFrom(t *testing.T, tg fetch.Target) ([]byte, error) {
	t.Helper()
	cl := newNode(t, fetch.Config{StallTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := cl.f.Open(ctx, tg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if ctx.Err() != nil {
		t.Fatalf("the fetch did not end by itself: %v", err)
	}
	return got, err
}

// gzipped is data gzip-compressed.
func gzipped(data []byte) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

// TestOriginContentEncoding: an origin that answers with a content-coded
// body the transport did not ask for and so did not decode (a file stored
// gzipped with Content-Encoding: gzip, a server that compresses whatever
// it is asked) gives the file's bytes: a 200 in gzip is decoded; a coding
// that cannot be decoded, or a range of the coded bytes, fails the fetch
// at once as an origin error, not as ErrChanged (the file did not change).
func TestOriginContentEncoding(t *testing.T) {
	big := makeAsset(t, 80, 3*MiB+100)
	small := makeAsset(t, 81, 300<<10)
	gz := func(data []byte) http.HandlerFunc {
		z := gzipped(data)
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.Itoa(len(z)))
			w.Write(z)
		}
	}
	gzChunked := func(data []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			zw.Write(data)
			zw.Close()
		}
	}
	gzRanges := func(data []byte) http.HandlerFunc { // nginx's gzip_static always
		z := gzipped(data)
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			http.ServeContent(w, r, "f.gz", modTime, bytes.NewReader(z))
		}
	}
	brUnlessIdentity := func(data []byte) http.HandlerFunc { // no Accept-Encoding: any coding will do
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Accept-Encoding") != "identity" {
				w.Header().Set("Content-Encoding", "br")
				w.Write([]byte("\x0b\x02\x80not really brotli"))
				return
			}
			http.ServeContent(w, r, "f", modTime, bytes.NewReader(data))
		}
	}
	for _, tc := range []struct {
		name  string
		a     asset
		h     func([]byte) http.HandlerFunc
		fails bool // with an origin error, not ErrChanged
	}{
		{"gzip 200", big, gz, false},
		{"gzip 200 chunked", big, gzChunked, false},
		{"gzip 200, one leaf", small, gz, false},
		{"br unless identity asked", big, brUnlessIdentity, false},
		{"ranges of the gzip file", big, gzRanges, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.h(tc.a.data))
			defer srv.Close()
			tg := tc.a.t
			tg.URL = srv.URL + "/f"
			got, err := fetchFrom(t, tg)
			switch {
			case !tc.fails && err != nil:
				t.Fatalf("Fetch = %v, want the file", err)
			case tc.fails && (!errors.Is(err, fetch.ErrUnavailable) || errors.Is(err, fetch.ErrChanged)):
				t.Fatalf("Fetch = %v, want ErrUnavailable, not ErrChanged", err)
			}
			checkBytes(t, got, tc.a.data[:len(got)])
			if !tc.fails {
				checkBytes(t, got, tc.a.data)
			}
		})
	}
}

// TestOriginContentRange: a 206 is read by its Content-Range, not by what
// was asked. A range that holds the leaf (from an earlier offset, or the
// whole file) gives the leaf's bytes; one that does not (another part of
// the file, a shorter one) fails the fetch at once as an origin error
// naming both ranges, not as ErrChanged: the file is as the Target says.
func TestOriginContentRange(t *testing.T) {
	a := makeAsset(t, 82, 3*MiB+100)
	n := int64(len(a.data))
	send := func(w http.ResponseWriter, first, last int64) {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, n))
		w.Header().Set("Content-Length", strconv.FormatInt(last-first+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(a.data[first : last+1])
	}
	for _, tc := range []struct {
		name  string
		give  func(first, last int64) (int64, int64) // the range sent for the one asked
		fails bool
	}{
		{"as asked", func(f, l int64) (int64, int64) { return f, l }, false},
		{"the whole file", func(f, l int64) (int64, int64) { return 0, n - 1 }, false},
		{"from 4 KiB earlier", func(f, l int64) (int64, int64) { return max(0, f-4096), l }, false},
		{"from the start, as long", func(f, l int64) (int64, int64) { return 0, l - f }, true},
		{"shorter", func(f, l int64) (int64, int64) { return f, f + 64<<10 - 1 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				first, last, ok := parseOneRange(r.Header.Get("Range"))
				if !ok {
					http.Error(w, "Range please", http.StatusBadRequest)
					return
				}
				first, last = tc.give(first, min(last, n-1))
				send(w, first, last)
			}))
			defer srv.Close()
			tg := a.t
			tg.URL = srv.URL + "/f"
			got, err := fetchFrom(t, tg)
			switch {
			case !tc.fails && err != nil:
				t.Fatalf("Fetch = %v, want the file", err)
			case tc.fails && (!errors.Is(err, fetch.ErrUnavailable) || errors.Is(err, fetch.ErrChanged)):
				t.Fatalf("Fetch = %v, want ErrUnavailable, not ErrChanged", err)
			}
			checkBytes(t, got, a.data[:len(got)])
			if !tc.fails {
				checkBytes(t, got, a.data)
			}
		})
	}
}

// pathOrigin is an origin in a synctest bubble: each path of files serves
// its bytes (Range requests honoured) after delay; any other path answers
// 404 after delay.
type pathOrigin struct {
	files map[string][]byte
	delay time.Duration
}

func (o pathOrigin) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case <-time.After(o.delay):
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	rec := httptest.NewRecorder()
	if data, ok := o.files[req.URL.Path]; ok {
		http.ServeContent(rec, req, "file", modTime, bytes.NewReader(data))
	} else {
		http.NotFound(rec, req)
	}
	return rec.Result(), nil
}

// TestOriginSharedPerURL: the same file at two paths (a logo copied into
// two directories: the same CID), one of them missing at the origin. A
// fetch of the one still there, started while the other's origin request
// is in flight, gets the file: concurrent fetches share an origin request
// only for the same URL. Before, it joined the other's request by leaf
// CID and failed with its 404.
func TestOriginSharedPerURL(t *testing.T) {
	a := makeAsset(t, 83, 200<<10)
	synctest.Test(t, func(t *testing.T) {
		h, st := bubbleNode(t)
		o := pathOrigin{files: map[string][]byte{"/b/logo.png": a.data}, delay: time.Second}
		f, err := fetch.New(fetch.Config{Host: h, Store: st, HTTPClient: &http.Client{Transport: o}})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		open := func(path string) *fetch.Reader {
			tg := a.t
			tg.URL = "http://origin.invalid" + path
			r, err := f.Open(context.Background(), tg)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		gone := open("/a/logo.png")
		defer gone.Close()
		synctest.Wait() // its origin request is in flight
		here := open("/b/logo.png")
		defer here.Close()
		if _, err := io.ReadAll(gone); !errors.Is(err, fetch.ErrUnavailable) {
			t.Errorf("Fetch(/a/logo.png) = %v, want ErrUnavailable (404)", err)
		}
		got, err := io.ReadAll(here)
		if err != nil {
			t.Fatalf("Fetch(/b/logo.png) = %v, want the file", err)
		}
		checkBytes(t, got, a.data)
	})
}

// TestGatewayBaseURL: a trustless gateway's base URL may have a path and a
// query (a signed URL's token): each block is asked for at
// BASE-PATH/ipfs/CID with the base's query, exactly as given, and
// format=raw. Before, the path was appended to the query
// ("/site?token=a%2Fb%3D/ipfs/CID?format=raw") and every request failed.
func TestGatewayBaseURL(t *testing.T) {
	a := makeAsset(t, 84, 2*MiB+1)
	src := newStore(t, -1)
	(&node{st: src}).hold(t, a)
	const token = "token=a%2Fb%3D"
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := cid.Decode(strings.TrimPrefix(r.URL.Path, "/site/ipfs/"))
		if err != nil || r.URL.Query().Get("format") != "raw" || !strings.HasPrefix(r.URL.RawQuery, token+"&") {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		b, err := src.Get(r.Context(), c)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Write(b.RawData())
	}))
	defer gw.Close()
	for _, base := range []string{gw.URL + "/site?" + token, gw.URL + "/site/?" + token} {
		t.Run(base, func(t *testing.T) {
			got, err := fetchFrom(t, fetch.Target{Cid: a.t.Cid, Gateway: base})
			if err != nil {
				t.Fatalf("Fetch = %v, want the file", err)
			}
			checkBytes(t, got, a.data)
		})
	}
}
