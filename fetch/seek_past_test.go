package fetch_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestSeekPastSingleLeaf: a file of one leaf opened by CID alone has no
// size until its leaf arrives. A position past the end of that leaf, or
// past the most a leaf can hold, must still fetch the leaf and end in
// io.EOF, and Seek relative to the end waits for the leaf as it waits for
// the size of a larger file. Before, a position past the first leaf moved
// the fetch window past the only leaf: the Read waited forever.
func TestSeekPastSingleLeaf(t *testing.T) {
	a := makeAsset(t, 45, 1000)
	srv := newNode(t, fetch.Config{})
	srv.hold(t, a)
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {{ID: srv.h.ID(), Addrs: srv.h.Addrs()}}}})
	for _, pos := range []int64{1000, 5000, 1 << 20, 3<<20 + 7} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := cl.f.Open(ctx, fetch.Target{Cid: a.t.Cid})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Seek(pos, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		n, err := r.Read(make([]byte, 10))
		if n != 0 || err != io.EOF {
			t.Errorf("Read at %d of a %d-byte leaf opened by CID = %d, %v; want 0, EOF", pos, len(a.data), n, err)
		}
		if got := r.Size(); got != int64(len(a.data)) {
			t.Errorf("Size after reading at %d = %d, want %d", pos, got, len(a.data))
		}
		r.Close()
		cancel()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cl.f.Open(ctx, fetch.Target{Cid: a.t.Cid})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, err := r.Seek(-10, io.SeekEnd); err != nil || n != int64(len(a.data))-10 {
		t.Fatalf("Seek(-10, SeekEnd) on a leaf opened by CID = %d, %v; want %d", n, err, len(a.data)-10)
	}
	b, err := io.ReadAll(r)
	if err != nil || string(b) != string(a.data[len(a.data)-10:]) {
		t.Errorf("the last 10 bytes = %q, %v; want %q", b, err, a.data[len(a.data)-10:])
	}
}

// TestSeekEndSingleLeafNoSource: Seek relative to the end of a leaf
// opened by CID alone, with no source for it, ends with the Reader's
// context.
func TestSeekEndSingleLeafNoSource(t *testing.T) {
	a := makeAsset(t, 46, 1000)
	silent := silentPeer(t)
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {{ID: silent.ID(), Addrs: silent.Addrs()}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r, err := cl.f.Open(ctx, fetch.Target{Cid: a.t.Cid})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Seek(0, io.SeekEnd); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Seek(0, SeekEnd) with no source of the leaf = %v, want its context's DeadlineExceeded", err)
	}
}
