package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestChangedOrigin: an origin file that no longer matches the Target (the
// site was redeployed under a stale manifest) fails the fetch at once, long
// before StallTimeout, with a *ChangedError that says how; it is not a bad
// block and penalises no one.
func TestChangedOrigin(t *testing.T) {
	a := makeAsset(t, 70, 3*MiB+100)
	changed := append([]byte(nil), a.data...)
	changed[MiB+5] ^= 0xff
	for _, tc := range []struct {
		name     string
		data     []byte
		noRange  bool
		wantSize int64 // OriginSize in the error; -1: a leaf told
	}{
		{"grew", append(append([]byte(nil), a.data...), "more"...), false, int64(len(a.data)) + 4},
		{"shrank", a.data[:MiB/2], false, MiB / 2},
		{"same size, new bytes", changed, false, -1},
		{"grew, no Range support", append(append([]byte(nil), a.data...), "more"...), true, int64(len(a.data)) + 4},
		{"same size, new bytes, no Range support", changed, true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin
			if tc.noRange {
				o = newWholeOrigin
			}
			url := o(t, tc.data).URL
			cl := newNode(t, fetch.Config{StallTimeout: time.Minute})
			tg := a.t
			tg.URL = url
			start := time.Now()
			r := cl.open(t, tg)
			got, err := io.ReadAll(r)
			var ce *fetch.ChangedError
			if !errors.Is(err, fetch.ErrChanged) || !errors.As(err, &ce) || errors.Is(err, fetch.ErrVerify) {
				t.Fatalf("ReadAll = %v, want a *ChangedError", err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("failed after %v: not at once", d)
			}
			if ce.URL != url || !ce.Root.Equals(a.t.Cid) || ce.Size != a.t.Size || ce.OriginSize != tc.wantSize {
				t.Errorf("ChangedError = %+v, want size %d there", ce, tc.wantSize)
			}
			if tc.wantSize < 0 && !ce.Leaf.Defined() {
				t.Errorf("ChangedError %+v does not name the leaf", ce)
			}
			checkBytes(t, got, a.data[:len(got)])
			if s := cl.f.Stats(); s.BadBlocks != 0 || s.PenalisedPeers != 0 {
				t.Errorf("Stats = %+v: a changed file counted as a bad block", s)
			}
		})
	}
}

// TestOriginDeadAtOnce: with no peer to turn to, an origin that answers 404
// or 500, or is down, fails the fetch at once (not after StallTimeout),
// with an error that is not a timeout.
func TestOriginDeadAtOnce(t *testing.T) {
	a := makeAsset(t, 71, 2*MiB)
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"404", func(t *testing.T) string { return serveStatus(t, http.StatusNotFound) }},
		{"500", func(t *testing.T) string { return serveStatus(t, http.StatusInternalServerError) }},
		{"down", func(t *testing.T) string { return downURL }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := newNode(t, fetch.Config{StallTimeout: time.Minute})
			tg := a.t
			tg.URL = tc.url(t)
			start := time.Now()
			r := cl.open(t, tg)
			got, err := io.ReadAll(r)
			if !errors.Is(err, fetch.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || len(got) != 0 {
				t.Fatalf("ReadAll = %d bytes, %v; want ErrUnavailable, not a timeout", len(got), err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("failed after %v: not at once", d)
			}
		})
	}
}

func serveStatus(t *testing.T, code int) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, http.StatusText(code), code)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestOriginHung: an origin that accepts connections and never answers
// fails the fetch within OriginHeaderTimeout (plus slack for a loaded
// machine) with an error matching context.DeadlineExceeded.
func TestOriginHung(t *testing.T) {
	a := makeAsset(t, 72, 2*MiB)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // read nothing, answer nothing
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	})
	const timeout = 300 * time.Millisecond
	cl := newNode(t, fetch.Config{OriginHeaderTimeout: timeout, StallTimeout: time.Minute})
	tg := a.t
	tg.URL = "http://" + ln.Addr().String() + "/file"
	start := time.Now()
	r := cl.open(t, tg)
	_, err = io.ReadAll(r)
	d := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, fetch.ErrUnavailable) {
		t.Fatalf("ReadAll = %v, want ErrUnavailable matching context.DeadlineExceeded", err)
	}
	if d < timeout || d > timeout+5*time.Second {
		t.Errorf("failed after %v, want %v (plus slack)", d, timeout)
	}
}

// stallingOrigin answers at once but sends only the first `send` bytes of
// each answer, then nothing until the request ends, or with trickle set
// step more bytes (at least one) each trickle; or, with hang, never
// answers at all.
type stallingOrigin struct {
	data    []byte
	send    int
	hang    bool
	noRange bool // answer every request with the whole file
	trickle time.Duration
	step    int
}

func (o stallingOrigin) RoundTrip(req *http.Request) (*http.Response, error) {
	if o.hang {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	if o.noRange {
		req = req.Clone(req.Context())
		req.Header.Del("Range")
	}
	rec := httptest.NewRecorder()
	http.ServeContent(rec, req, "file", modTime, bytes.NewReader(o.data))
	resp := rec.Result()
	resp.Body = &stallBody{r: io.LimitReader(resp.Body, int64(o.send)), rest: resp.Body, trickle: o.trickle, step: max(o.step, 1), ctx: req.Context()}
	return resp, nil
}

type stallBody struct {
	r       io.Reader
	rest    io.Reader // after r, step bytes each trickle
	trickle time.Duration
	step    int
	ctx     context.Context
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 || err != io.EOF {
		return n, err
	}
	if b.trickle > 0 {
		select {
		case <-time.After(b.trickle):
			return io.ReadFull(b.rest, p[:min(len(p), b.step)])
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
	<-b.ctx.Done()
	return 0, b.ctx.Err()
}

func (b *stallBody) Close() error { return nil }

// TestOriginTimeoutPolicy checks the origin timeouts in a synctest bubble,
// where time is exact: no headers for OriginHeaderTimeout, or no body
// bytes for OriginIdleTimeout, fail the fetch (no peer known) exactly then,
// with an error matching context.DeadlineExceeded; negative timeouts wait
// for as long as the caller does.
func TestOriginTimeoutPolicy(t *testing.T) {
	a := makeAsset(t, 73, 2*MiB)
	for _, tc := range []struct {
		name           string
		o              stallingOrigin
		header, idle   time.Duration
		want           time.Duration // 0: no timeout, the caller's context ends it
		wantDeadline   bool
		callerDeadline time.Duration
	}{
		{"no headers", stallingOrigin{hang: true}, 3 * time.Second, time.Hour, 3 * time.Second, true, 0},
		{"body stalls", stallingOrigin{data: a.data, send: 1000}, time.Hour, 2 * time.Second, 2 * time.Second, true, 0},
		// A byte a second, after a first 1000: too little to count as
		// alive (idleProgress). Before, each byte restarted the timer and
		// only the caller's deadline ended the fetch.
		{"body trickles", stallingOrigin{data: a.data, send: 1000, trickle: time.Second}, time.Hour, 2 * time.Second, 2 * time.Second, true, time.Minute},
		// The first answer gives leaf 0 and shows Range is ignored; the
		// whole-file read then stalls inside leaf 1.
		{"whole-file read stalls", stallingOrigin{data: a.data, send: 1<<20 + 1000, noRange: true}, time.Hour, 2 * time.Second, 2 * time.Second, true, 0},
		{"default header timeout", stallingOrigin{hang: true}, 0, 0, fetch.DefaultOriginHeaderTimeout, true, 0},
		// Five minutes stand for "never" (30 times the default timeouts): a
		// longer fake time ticks every timer of the host in the bubble so
		// often that the race detector ran out of its own state.
		{"no timeout", stallingOrigin{hang: true}, -1, -1, 5 * time.Minute, false, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				if tc.callerDeadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.callerDeadline)
					defer cancel()
				}
				_, _, d, err := bubbleRead(t, ctx, fetch.Config{StallTimeout: 24 * time.Hour,
					OriginHeaderTimeout: tc.header, OriginIdleTimeout: tc.idle,
					HTTPClient: &http.Client{Transport: tc.o}}, a)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("ReadAll = %v, want context.DeadlineExceeded", err)
				}
				if got := errors.Is(err, fetch.ErrUnavailable); got != tc.wantDeadline {
					t.Errorf("ReadAll = %v: the origin's timeout ended it: %v, want %v", err, got, tc.wantDeadline)
				}
				if d != tc.want {
					t.Errorf("failed after %v, want exactly %v", d, tc.want)
				}
			})
		})
	}
}

// TestOriginSlowAlive: an origin that sends 16 KiB a second, slow but
// alive by OriginIdleTimeout's measure (idleProgress within it), is
// waited for: the fetch completes.
func TestOriginSlowAlive(t *testing.T) {
	a := makeAsset(t, 74, 100<<10)
	synctest.Test(t, func(t *testing.T) {
		o := stallingOrigin{data: a.data, send: 0, trickle: time.Second, step: 16 << 10}
		got, _, d, err := bubbleRead(t, context.Background(), fetch.Config{StallTimeout: 24 * time.Hour,
			OriginIdleTimeout: 2 * time.Second, HTTPClient: &http.Client{Transport: o}}, a)
		if err != nil || !bytes.Equal(got, a.data) {
			t.Fatalf("ReadAll = %d bytes, %v; want the %d bytes", len(got), err, len(a.data))
		}
		if d != 7*time.Second {
			t.Errorf("took %v, want 7s (100 KiB at 16 KiB a second)", d)
		}
	})
}

// TestRangeIgnoredReadOnce: an origin that answers Range requests with the
// whole file sends each file about once (before: once per leaf, 33
// requests and 627 MB for a 31 MB file), and once the origin is known to
// ignore Range, a second file takes one request.
func TestRangeIgnoredReadOnce(t *testing.T) {
	files := []asset{makeAsset(t, 74, 12*MiB+3), makeAsset(t, 75, 5*MiB)}
	var reqs, sent atomic.Int64
	mux := http.NewServeMux()
	for i, a := range files {
		mux.HandleFunc(fmt.Sprintf("/f%d", i), func(w http.ResponseWriter, r *http.Request) {
			reqs.Add(1)
			w.Header().Set("Content-Length", strconv.Itoa(len(a.data)))
			for b := a.data; len(b) > 0; {
				k := min(len(b), 64<<10)
				n, err := w.Write(b[:k])
				sent.Add(int64(n))
				if err != nil {
					return
				}
				b = b[k:]
			}
		})
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cl := newNode(t, fetch.Config{})
	for i, a := range files {
		reqs.Store(0)
		sent.Store(0)
		tg := a.t
		tg.URL = fmt.Sprintf("%s/f%d", srv.URL, i)
		r, err := cl.f.Open(context.Background(), tg)
		if err != nil {
			t.Fatal(err)
		}
		checkBytes(t, readAll(t, r), a.data)
		st := r.Stats()
		r.Close()
		size := int64(len(a.data))
		wantReqs := int64(2) // the first answer finds out; one more reads the file whole
		if i > 0 {
			wantReqs = 1
		}
		t.Logf("file %d (%d bytes): %d requests, %d bytes sent", i, size, reqs.Load(), sent.Load())
		if st.OriginBytes != size || reqs.Load() > wantReqs || sent.Load() > 2*size {
			t.Errorf("file %d (%d bytes): %d requests, %d bytes sent, %d kept; want at most %d requests and %d bytes",
				i, size, reqs.Load(), sent.Load(), st.OriginBytes, wantReqs, 2*size)
		}
	}
}

// TestRangeIgnoredByOneFile: an origin that ignores Range for one file (a
// dynamic path, a CDN answering a cache miss whole) and honours it for the
// others. Once a whole read of another file has been answered 206, its
// files are asked for leaf by leaf again (each node's share of a crowd,
// not a whole copy each), while the file that ignored Range is still read
// whole. Before, the first whole answer marked the origin, and every file
// from it was read whole for the Fetcher's life.
func TestRangeIgnoredByOneFile(t *testing.T) {
	dyn, big, big2 := makeAsset(t, 76, 3*MiB), makeAsset(t, 77, 3*MiB+5), makeAsset(t, 78, 3*MiB+9)
	var mu sync.Mutex
	ranges := map[string][]string{}
	mux := http.NewServeMux()
	serve := func(path string, a asset, honour bool) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			ranges[path] = append(ranges[path], r.Header.Get("Range"))
			mu.Unlock()
			if !honour {
				r.Header.Del("Range")
			}
			http.ServeContent(w, r, "f", modTime, bytes.NewReader(a.data))
		})
	}
	serve("/dyn", dyn, false)
	serve("/big", big, true)
	serve("/big2", big2, true)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cl := newNode(t, fetch.Config{})
	for _, f := range []struct {
		path string
		a    asset
	}{{"/dyn", dyn}, {"/big", big}, {"/big2", big2}} {
		tg := f.a.t
		tg.URL = srv.URL + f.path
		r, err := cl.f.Open(context.Background(), tg)
		if err != nil {
			t.Fatal(err)
		}
		checkBytes(t, readAll(t, r), f.a.data)
		r.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("Range headers by path: %q", ranges)
	if got := ranges["/big"]; len(got) != 1 || got[0] != "bytes=0-" {
		t.Errorf("/big, after /dyn ignored Range, was asked %q; want one whole read as a range, bytes=0-", got)
	}
	if got := ranges["/big2"]; len(got) != 4 || slices.Contains(got, "") || slices.Contains(got, "bytes=0-") {
		t.Errorf("/big2, after /big honoured Range, was asked %q; want its 4 leaves one by one", got)
	}
	if got := ranges["/dyn"]; len(got) != 2 || got[1] != "bytes=0-" {
		t.Errorf("/dyn was asked %q; want a leaf, answered whole, then a whole read", got)
	}
}

// TestRangeWholeReadCapped: an origin that answered a file whole once (a
// cache miss) and then answers the whole read's "Range: bytes=0-" with a
// 206 of its first MiB only (a CDN capping ranges): the leaves in that
// answer are used, the rest asked for one by one, and the fetch completes
// without asking for the whole file again.
func TestRangeWholeReadCapped(t *testing.T) {
	a := makeAsset(t, 79, 3*MiB+17)
	var mu sync.Mutex
	var ranges []string
	mux := http.NewServeMux()
	mux.HandleFunc("/f", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := len(ranges) == 0
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		switch {
		case first:
			r.Header.Del("Range") // the cache miss: whole
		case r.Header.Get("Range") == "bytes=0-":
			r.Header.Set("Range", fmt.Sprintf("bytes=0-%d", MiB-1)) // capped
		}
		http.ServeContent(w, r, "f", modTime, bytes.NewReader(a.data))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cl := newNode(t, fetch.Config{})
	tg := a.t
	tg.URL = srv.URL + "/f"
	r, err := cl.f.Open(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkBytes(t, readAll(t, r), a.data)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("Range headers: %q", ranges)
	wholes := 0
	for _, h := range ranges {
		if h == "bytes=0-" {
			wholes++
		}
	}
	if len(ranges) > 5 || wholes != 1 {
		t.Errorf("asked %q: want the first leaf, one whole read, then the leaves it did not hold one by one", ranges)
	}
}
