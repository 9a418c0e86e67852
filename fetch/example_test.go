package fetch_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/libp2p/go-libp2p"

	"github.com/meshcdn/meshcdn/fetch"
	"github.com/meshcdn/meshcdn/store"
)

// Example fetches a 3 MiB file that no peer is known to hold: the origin is
// asked at once, every leaf is checked against the CIDs its inner nodes
// give, and the bytes stream in order.
func Example() {
	ctx := context.Background()
	data := bytes.Repeat([]byte("meshcdn "), 3<<20/8)

	// The origin serves the plain file; the manifest gives its CID, size
	// and inner nodes (here computed with a throw-away store).
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "file", modTime, bytes.NewReader(data))
	}))
	defer origin.Close()
	tmp, _ := store.New(store.Config{InMemory: true})
	content, _ := tmp.Import(ctx, bytes.NewReader(data), store.ImportOptions{})
	nodes, _ := store.InnerNodes(ctx, tmp, content.Root)
	tmp.Close()

	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	st, _ := store.New(store.Config{InMemory: true, Quota: 64 << 20})
	defer st.Close()
	f, err := fetch.New(fetch.Config{Host: h, Store: st})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()

	r, err := f.Open(ctx, fetch.Target{Cid: content.Root, Size: content.Size, Nodes: nodes, URL: origin.URL})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	s := r.Stats()
	fmt.Println(len(got), bytes.Equal(got, data), err)
	fmt.Println("origin:", s.OriginBytes, "peer:", s.PeerBytes, "local:", s.LocalBytes)
	// Output:
	// 3145728 true <nil>
	// origin: 3145728 peer: 0 local: 0
}
