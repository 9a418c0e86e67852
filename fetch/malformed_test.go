package fetch_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/meshcdn/meshcdn/fetch"
)

// TestLeafOfAnotherSize: a leaf whose bytes hash to its CID but are not as
// many as the Target says fails the read with ErrMalformed, from a peer or
// from the store, whether the leaf is shorter or longer; it neither spins
// returning (0, nil), nor panics on a Seek past its real end, nor returns
// bytes of the wrong offsets.
func TestLeafOfAnotherSize(t *testing.T) {
	a := makeAsset(t, 7, 3000) // one raw leaf
	prov := newNode(t, fetch.Config{})
	prov.hold(t, a)
	cl := newNode(t, fetch.Config{Providers: providers{a.t.Cid: {prov.info()}}})
	cases := []struct {
		name     string
		n        *node
		declared int64
		seek     int64
	}{
		{"peer, declared longer", cl, 4000, 0},
		{"peer, declared shorter", cl, 2000, 0},
		{"store, declared longer, seek past the real end", prov, 4000, 3500},
		{"store, declared shorter", prov, 2000, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tg := fetch.Target{Cid: a.t.Cid, Size: c.declared}
			r, err := c.n.f.Open(ctx, tg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer r.Close()
			if _, err := r.Seek(c.seek, io.SeekStart); err != nil {
				t.Fatalf("Seek: %v", err)
			}
			type result struct {
				got []byte
				err error
			}
			done := make(chan result, 1)
			go func() {
				got, err := io.ReadAll(r)
				done <- result{got, err}
			}()
			var res result
			select {
			case res = <-done:
			case <-time.After(40 * time.Second):
				t.Fatal("ReadAll has not returned in 40 s") // it spun on (0, nil)
			}
			got, err := res.got, res.err
			var me *fetch.MalformedError
			if !errors.Is(err, fetch.ErrMalformed) || !errors.As(err, &me) {
				t.Fatalf("ReadAll = %d bytes, %v; want ErrMalformed", len(got), err)
			}
			if me.Size != 3000 || me.Declared != c.declared || !me.Leaf.Equals(a.t.Cid) {
				t.Errorf("MalformedError = %+v, want size 3000, declared %d, leaf %s", me, c.declared, a.t.Cid)
			}
			if len(got) != 0 {
				t.Errorf("ReadAll returned %d bytes before the error, want none", len(got))
			}
			if ctx.Err() != nil {
				t.Errorf("the read ended only with its context")
			}
		})
	}
	if tot := cl.f.Stats(); tot.PenalisedPeers != 0 || tot.BadBlocks != 0 {
		t.Errorf("BadBlocks %d, PenalisedPeers %d; want 0: the peer sent the block asked for", tot.BadBlocks, tot.PenalisedPeers)
	}
}
