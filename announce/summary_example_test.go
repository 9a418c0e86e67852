package announce_test

import (
	"encoding/hex"
	"fmt"
	"log"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshcdn/meshcdn/announce"
)

// The summary request and answer of the package documentation's example:
// the answering peer holds "hello\n" (raw) and knows that another peer, at
// /ip4/127.0.0.1/tcp/4001, holds a dag-pb root.
func ExampleEncodeSummary() {
	hello := cid.MustParse("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am")
	dir := cid.MustParse("bafybeihcldjer7njjrrxknqh67cestxa7s7jf4nhnp62y6k4twcbahvtc4")
	other, err := peer.Decode("12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp")
	if err != nil {
		log.Fatal(err)
	}
	req := announce.EncodeSummaryRequest(announce.SummaryRequest{Others: true})
	ans, err := announce.EncodeSummary(announce.Summary{
		TTL: 180 * time.Second,
		Own: []cid.Cid{hello},
		Others: []announce.Holder{{
			Peer:  other,
			Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/4001")},
			Roots: []cid.Cid{dir},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(announce.SummaryProtocol("office"))
	fmt.Println("request:", hex.EncodeToString(req))
	fmt.Println("answer:", len(ans), "bytes")
	for _, part := range [][2]int{{0, 3}, {3, 7}, {7, 44}, {44, 83}, {83, 94}, {94, 96}, {96, 133}} {
		fmt.Println(hex.EncodeToString(ans[part[0]:part[1]]))
	}
	// Output:
	// /meshcdn/office/summary/1
	// request: 0101
	// answer: 133 bytes
	// 0100b4
	// 00000001
	// 24015512205891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
	// 260024080112204cb5abf6ad79fbf5abbccafcc269d85cd2651ed4b885b5869f241aedf0a5ba29
	// 010008047f000001060fa1
	// 0001
	// 2401701220e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317
}
