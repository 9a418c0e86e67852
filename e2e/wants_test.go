//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/internal/testutil"
)

// TestBrowserWantsOnTheWire: what the page puts on the wire, read by boxo's
// own bitswap message parser on a Go host the page is connected to. The
// page asks the host for a block it does not have, then gives up: the host
// reads a want-block (with send-dont-have) and then a CANCEL of that block,
// in that order (@helia/bitswap 4.0.19 never sent a cancel).
func TestBrowserWantsOnTheWire(t *testing.T) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1/webtransport"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	entries := make(chan bsmsg.Entry, 16)
	h.SetStreamHandler("/ipfs/bitswap/1.2.0", func(s network.Stream) {
		defer s.Close()
		r := msgio.NewVarintReaderSize(s, 4<<20)
		for {
			m, _, err := bsmsg.FromMsgReader(r)
			if err != nil {
				return
			}
			for _, e := range m.Wantlist() {
				entries <- e
			}
		}
	})
	var wt ma.Multiaddr
	for _, a := range h.Addrs() {
		wt = a.Encapsulate(ma.StringCast("/p2p/" + h.ID().String()))
	}
	c := uploadCID(t, testutil.Bytes(41, 1000))
	d := newDriver(t)
	d.open("A", pageURL(pageServer(t, nil), wt, ""))
	var wants struct{ WantBlocks, Cancels int }
	d.eval("A", fmt.Sprintf(`const m = window.meshcdn; const ac = new AbortController();
const p = m.fromPeers(window.meshcdnCID('%s'), ac.signal, ['%s']).catch((e) => e.message);
await new Promise((resolve) => setTimeout(resolve, 500));
ac.abort(); await p;
await new Promise((resolve) => setTimeout(resolve, 200));
return m.stats.wants;`, c, h.ID()), &wants)
	want := func(what string, check func(bsmsg.Entry) bool) {
		t.Helper()
		select {
		case e := <-entries:
			if !e.Cid.Equals(c) || !check(e) {
				t.Errorf("host read %+v, want %s of %s", e, what, c)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("host read no %s of %s", what, c)
		}
	}
	want("want-block with send-dont-have", func(e bsmsg.Entry) bool {
		return !e.Cancel && e.WantType == pb.Message_Wantlist_Block && e.SendDontHave
	})
	want("cancel", func(e bsmsg.Entry) bool { return e.Cancel })
	if wants.WantBlocks != 1 || wants.Cancels != 1 {
		t.Errorf("page counts %+v, want 1 want-block and 1 cancel", wants)
	}
}
