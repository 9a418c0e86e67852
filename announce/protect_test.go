package announce

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
)

// TestMeshPeerUnprotectedWhenGone: gossipsub protects a peer of the
// topic's mesh in the connection manager at GRAFT and unprotects it only
// at PRUNE; a peer that disconnects leaves the mesh without one. The
// Announcer unprotects it when its last connection closes. Before, every
// mesh peer that ever left a seed stayed protected: its protected set grew
// with its churn (6,762 entries after 13,000 connections in an audit), and
// a key grafted once came back immune to the connection manager's trimming.
func TestMeshPeerUnprotectedWhenGone(t *testing.T) {
	cm, err := connmgr.NewConnManager(10, 20)
	if err != nil {
		t.Fatal(err)
	}
	a := loopbackNodeWith(t, false, false, libp2p.ConnectionManager(cm))
	b := loopbackNode(t, false)
	connectLoopback(t, a, b)
	tag := "pubsub:" + a.a.Topic()
	deadline := time.Now().Add(10 * time.Second)
	for !cm.IsProtected(b.h.ID(), tag) { // grafted at a heartbeat
		if time.Now().After(deadline) {
			t.Fatalf("b never protected under %q: gossipsub's tag changed?", tag)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.h.Close()
	deadline = time.Now().Add(10 * time.Second)
	for a.h.Network().Connectedness(b.h.ID()) == network.Connected || cm.IsProtected(b.h.ID(), tag) {
		if time.Now().After(deadline) {
			t.Fatalf("b gone %v, still protected %v after 10 s", a.h.Network().Connectedness(b.h.ID()) != network.Connected, cm.IsProtected(b.h.ID(), tag))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
