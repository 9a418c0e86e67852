package fetch_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestSeekEndByCID: a file of inner nodes opened by CID alone learns its
// size from its root; Seek relative to the end right after Open waits for
// it instead of failing "size not known yet", so that http.ServeContent
// (whose first call may be Seek(0, SeekEnd)) serves it. While the size
// cannot come (a silent provider), the Seek ends with the Reader's
// context, or with ErrClosed when the Reader closes.
func TestSeekEndByCID(t *testing.T) {
	a := makeAsset(t, 43, 3*MiB+3)
	cl := newNode(t, fetch.Config{})
	cl.hold(t, a)
	ctx := context.Background()
	r, err := cl.f.Open(ctx, fetch.Target{Cid: a.t.Cid})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, err := r.Seek(0, io.SeekEnd); err != nil || n != int64(len(a.data)) {
		t.Fatalf("Seek(0, SeekEnd) right after Open = %d, %v; want %d", n, err, len(a.data))
	}
	r.Seek(0, io.SeekStart)
	rec := httptest.NewRecorder()
	http.ServeContent(rec, httptest.NewRequest("GET", "/f.bin", nil), "f.bin", time.Time{}, r)
	if rec.Code != http.StatusOK || rec.Body.Len() != len(a.data) {
		t.Errorf("ServeContent(Reader opened by CID) = %d with %d bytes, want 200 with %d", rec.Code, rec.Body.Len(), len(a.data))
	}

	silent := silentPeer(t)
	b := makeAsset(t, 44, 2*MiB)
	cl2 := newNode(t, fetch.Config{Providers: providers{b.t.Cid: {{ID: silent.ID(), Addrs: silent.Addrs()}}}})
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	r2, err := cl2.f.Open(dctx, fetch.Target{Cid: b.t.Cid})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Seek(0, io.SeekEnd); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Seek(0, SeekEnd) with no source of the size = %v, want its context's DeadlineExceeded", err)
	}
	r2.Close()
	r3, err := cl2.f.Open(ctx, fetch.Target{Cid: b.t.Cid})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r3.Seek(0, io.SeekEnd); done <- err }()
	r3.Close()
	if err := <-done; !errors.Is(err, fetch.ErrClosed) {
		t.Errorf("Seek(0, SeekEnd) on a Reader closed while waiting for the size = %v, want ErrClosed", err)
	}
}
