package announce_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshcdn/meshcdn/announce"
	"github.com/meshcdn/meshcdn/store"
)

// Two peers of the mesh "office" on 127.0.0.1: one imports a file, the
// other's provider table learns who holds it. Each Announcer here creates
// its own gossipsub; the DHT and mDNS are off to keep the example on
// loopback (mesh.New turns them on).
func ExampleNew() {
	ctx := context.Background()
	newPeer := func() (host.Host, *store.Store, *announce.Announcer) {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			log.Fatal(err)
		}
		st, err := store.New(store.Config{InMemory: true})
		if err != nil {
			log.Fatal(err)
		}
		a, err := announce.New(announce.Config{
			Name:       "office",
			Host:       h,
			Holdings:   st,
			DisableDHT: true,
			MDNS:       announce.Off,
		})
		if err != nil {
			log.Fatal(err)
		}
		return h, st, a
	}
	h1, st1, a1 := newPeer()
	h2, st2, a2 := newPeer()
	defer func() {
		for _, c := range []interface{ Close() error }{a1, a2, st1, st2, h1, h2} {
			c.Close()
		}
	}()

	// Watch peer 2's table, connect, and import on peer 1.
	changes := a2.Table().Subscribe(ctx)
	if err := h2.Connect(ctx, peer.AddrInfo{ID: h1.ID(), Addrs: h1.Addrs()}); err != nil {
		log.Fatal(err)
	}
	content, err := st1.Import(ctx, strings.NewReader("hello, office\n"), store.ImportOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for c := range changes {
		if c.Added && c.Root == content.Root {
			break
		}
	}
	for ai := range a2.Table().FindProvidersAsync(ctx, content.Root, 1) {
		fmt.Println("topic:", a2.Topic())
		fmt.Println("peer 2 finds", content.Root, "at peer 1:", ai.ID == h1.ID())
	}
	// Output:
	// topic: /meshcdn/office/announce/1
	// peer 2 finds bafkreihywuahxla44vst2r26u6u52nnlzmty74gvvebtp3dwtreg4pyheq at peer 1: true
}
