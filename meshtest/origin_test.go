package meshtest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcdn/meshcdn/manifest"
	"github.com/meshcdn/meshcdn/meshtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, meshtest.LeakOptions()...)
}

// get fetches path from o with an optional Range header and returns the
// response and its body (and the error reading it).
func get(t *testing.T, ctx context.Context, o *meshtest.Origin, path, rng string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", o.URL()+"/"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestSiteManifestMatchesFromDir(t *testing.T) {
	s := meshtest.DemoSite(1, 3<<20+5)
	dir := t.TempDir()
	for p, b := range s {
		name := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(name), 0o755)
		if err := os.WriteFile(name, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := manifest.FromDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Manifest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wj, _ := want.Marshal()
	gj, _ := got.Marshal()
	if !bytes.Equal(wj, gj) {
		t.Errorf("Site.Manifest differs from manifest.FromDir:\n%s\nwant\n%s", gj, wj)
	}
	// The same seed gives the same site, another seed another.
	if again := meshtest.DemoSite(1, 3<<20+5); !bytes.Equal(again["app.js"], s["app.js"]) {
		t.Error("DemoSite(1) changed between calls")
	}
	if other := meshtest.DemoSite(2, 3<<20+5); bytes.Equal(other["app.js"], s["app.js"]) {
		t.Error("DemoSite(2) equals DemoSite(1)")
	}
	// An origin on the directory serves what FromDir lists.
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Dir: dir})
	_, mj, err := get(t, context.Background(), o, "manifest.json", "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(mj)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Assets) != len(want.Assets) || !m.Assets[0].Cid.Equals(want.Assets[0].Cid) {
		t.Errorf("origin on a directory serves %d assets, want %d", len(m.Assets), len(want.Assets))
	}
}

func TestOriginServesAndCounts(t *testing.T) {
	site := meshtest.GenerateSite(3, map[string]int64{"a.bin": 300 << 10, "b/c.txt": 1000})
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: site, Label: func(r *http.Request) string { return r.UserAgent() }})
	ctx := context.Background()
	resp, b, err := get(t, ctx, o, "a.bin", "")
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, site["a.bin"]) {
		t.Fatalf("GET a.bin = %v, %d bytes, %v; want 200 and the file", resp.Status, len(b), err)
	}
	resp, b, err = get(t, ctx, o, "a.bin", "bytes=1000-1999")
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, site["a.bin"][1000:2000]) {
		t.Fatalf("GET a.bin bytes=1000-1999 = %v, %d bytes, %v; want 206 and the range", resp.Status, len(b), err)
	}
	if resp, _, _ := get(t, ctx, o, "nope", ""); resp.StatusCode != 404 {
		t.Errorf("GET nope = %v, want 404", resp.Status)
	}
	get(t, ctx, o, "manifest.json", "")
	st := o.Stats()
	want := int64(300<<10 + 1000)
	if st.Sent != want || o.Sent() != want || st.Paths["a.bin"].Sent != want || st.Paths["a.bin"].Requests != 2 || st.Requests != 2 {
		t.Errorf("Stats = %+v, want %d bytes sent in 2 requests of a.bin", st, want)
	}
	if st.Labels["Go-http-client/1.1"] != want {
		t.Errorf("Labels = %v, want %d for Go's client", st.Labels, want)
	}
}

func TestOriginNoRange(t *testing.T) {
	site := meshtest.GenerateSite(4, map[string]int64{"a.bin": 5000})
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: site, NoRange: true})
	resp, b, err := get(t, context.Background(), o, "a.bin", "bytes=10-19")
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, site["a.bin"]) || resp.Header.Get("Accept-Ranges") != "" {
		t.Fatalf("GET with Range and NoRange = %v, %d bytes, Accept-Ranges %q, %v; want 200, the whole file and no Accept-Ranges",
			resp.Status, len(b), resp.Header.Get("Accept-Ranges"), err)
	}
}

// TestOriginUplinkShared: two clients at once share the uplink, so the two
// bodies take at least their sum over the rate (less one burst).
func TestOriginUplinkShared(t *testing.T) {
	const size, rate = 1 << 20, 4 << 20
	site := meshtest.GenerateSite(5, map[string]int64{"a": size, "b": size})
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: site, BytesPerSecond: rate, Latency: 50 * time.Millisecond})
	start := time.Now()
	done := make(chan error, 2)
	for _, p := range []string{"a", "b"} {
		go func() {
			_, b, err := get(t, context.Background(), o, p, "")
			if err == nil && len(b) != size {
				err = errors.New("short body")
			}
			done <- err
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if d, least := time.Since(start), time.Duration(float64(2*size-64<<10)/rate*float64(time.Second))+50*time.Millisecond; d < least {
		t.Errorf("two 1 MiB bodies at 4 MiB/s took %v, want at least %v", d, least)
	}
}

func TestOriginFaults(t *testing.T) {
	const size = 200 << 10
	site := meshtest.GenerateSite(6, map[string]int64{"a.bin": size, "ok.bin": 100})
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: site})
	for _, tc := range []struct {
		name  string
		fault meshtest.Fault
		check func(resp *http.Response, body []byte, err error) string
	}{
		{"status", meshtest.Fault{Kind: meshtest.FaultStatus, Status: 503}, func(resp *http.Response, _ []byte, err error) string {
			if err != nil || resp.StatusCode != 503 {
				return "want 503"
			}
			return ""
		}},
		{"hang", meshtest.Fault{Kind: meshtest.FaultHang}, func(resp *http.Response, _ []byte, err error) string {
			if !errors.Is(err, context.DeadlineExceeded) || resp != nil {
				return "want no response before the deadline"
			}
			return ""
		}},
		{"stall", meshtest.Fault{Kind: meshtest.FaultStall, After: 1000}, func(resp *http.Response, b []byte, err error) string {
			if !errors.Is(err, context.DeadlineExceeded) || len(b) != 1000 || !bytes.Equal(b, site["a.bin"][:1000]) {
				return "want the first 1000 bytes, then nothing before the deadline"
			}
			return ""
		}},
		{"truncate", meshtest.Fault{Kind: meshtest.FaultTruncate, After: 70000}, func(resp *http.Response, b []byte, err error) string {
			if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(b, site["a.bin"][:70000]) {
				return "want the first 70000 bytes, then an unexpected EOF"
			}
			return ""
		}},
		{"corrupt", meshtest.Fault{Kind: meshtest.FaultCorrupt, After: 100}, func(resp *http.Response, b []byte, err error) string {
			good := site["a.bin"]
			if err != nil || len(b) != size || !bytes.Equal(b[:100], good[:100]) || b[100] == good[100] || b[size-1] == good[size-1] {
				return "want the right length with bytes from 100 on wrong"
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o.SetFault(meshtest.FaultPath("a.bin", tc.fault))
			defer o.SetFault(nil)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			resp, b, err := get(t, ctx, o, "a.bin", "")
			if msg := tc.check(resp, b, err); msg != "" {
				t.Errorf("GET under %s: %d bytes, err %v: %s", tc.name, len(b), err, msg)
			}
			// Other paths are served normally.
			if resp, b, err := get(t, context.Background(), o, "ok.bin", ""); err != nil || resp.StatusCode != 200 || len(b) != 100 {
				t.Errorf("GET ok.bin under a fault of a.bin = %v, %d bytes", err, len(b))
			}
		})
	}
}

// TestOriginCloseEndsHangs: Close returns while requests hang and stall
// (goleak in TestMain checks that nothing is left).
func TestOriginCloseEndsHangs(t *testing.T) {
	site := meshtest.GenerateSite(7, map[string]int64{"a": 1 << 20, "b": 1 << 20})
	o, err := meshtest.NewOrigin(meshtest.OriginConfig{Site: site})
	if err != nil {
		t.Fatal(err)
	}
	o.SetFault(func(r *http.Request) meshtest.Fault {
		if r.URL.Path == "/a" {
			return meshtest.Fault{Kind: meshtest.FaultHang}
		}
		return meshtest.Fault{Kind: meshtest.FaultStall, After: 10}
	})
	done := make(chan error, 2)
	for _, p := range []string{"a", "b"} {
		go func() {
			_, _, err := get(t, context.Background(), o, p, "")
			done <- err
		}()
	}
	for o.Requests() < 2 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan struct{})
	go func() {
		o.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with hung requests")
	}
	for range 2 {
		if err := <-done; err == nil {
			t.Error("a hung request ended without an error")
		}
	}
}

// TestOriginSetSite: a redeploy swaps the files and the manifest together;
// the manifest's ETag changes with it and If-None-Match gets 304 while it
// stands.
func TestOriginSetSite(t *testing.T) {
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: meshtest.Site{"index.html": []byte("one")}})
	ctx := context.Background()
	manifestETag := func(inm string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, "GET", o.ManifestURL(), nil)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Etag")
	}
	code, etag1 := manifestETag("")
	if code != 200 || etag1 == "" {
		t.Fatalf("manifest = %d, ETag %q", code, etag1)
	}
	if code, _ := manifestETag(etag1); code != http.StatusNotModified {
		t.Errorf("manifest with If-None-Match of the current ETag = %d, want 304", code)
	}
	m2, err := o.SetSite(meshtest.Site{"index.html": []byte("two"), "new.txt": []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if code, etag2 := manifestETag(etag1); code != 200 || etag2 == etag1 {
		t.Errorf("after SetSite: manifest = %d, ETag %q (was %q); want 200 and a new ETag", code, etag2, etag1)
	}
	if _, b, _ := get(t, ctx, o, "index.html", ""); string(b) != "two" || len(m2.Assets) != 2 || o.Manifest() != m2 {
		t.Errorf("after SetSite: index.html = %q, manifest of %d assets", b, len(m2.Assets))
	}
	if st := o.Stats(); st.ManifestRequests != 3 || st.ManifestNotModified != 1 {
		t.Errorf("Stats = %d manifest requests, %d not modified; want 3 and 1", st.ManifestRequests, st.ManifestNotModified)
	}
}

// TestOriginFaultAll: FaultAll's hang and status reach the manifest and
// paths the site does not have, not only assets.
func TestOriginFaultAll(t *testing.T) {
	o := meshtest.StartOrigin(t, meshtest.OriginConfig{Site: meshtest.Site{"a.txt": []byte("a")}})
	o.SetFault(meshtest.FaultAll(meshtest.Fault{Kind: meshtest.FaultStatus, Status: 502}))
	for _, p := range []string{"manifest.json", "a.txt", "nope"} {
		if resp, _, err := get(t, context.Background(), o, p, ""); err != nil || resp.StatusCode != 502 {
			t.Errorf("GET %s under FaultAll(502) = %v, %v; want 502", p, resp, err)
		}
	}
	o.SetFault(meshtest.FaultAll(meshtest.Fault{Kind: meshtest.FaultHang}))
	for _, p := range []string{"manifest.json", "nope"} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		if _, _, err := get(t, ctx, o, p, ""); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("GET %s under FaultAll(hang) = %v, want no answer before the deadline", p, err)
		}
		cancel()
	}
}
