package announce

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

const (
	mdnsDialTimeout = 10 * time.Second
	mdnsMaxDials    = 8
)

// mdnsNotifee connects to the mesh's peers that mDNS finds on the LAN.
type mdnsNotifee struct {
	a    *Announcer
	sem  chan struct{}
	mu   sync.Mutex
	done bool
}

func (n *mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	a := n.a
	if ai.ID == a.host.ID() || a.host.Network().Connectedness(ai.ID) == network.Connected {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done {
		return
	}
	select {
	case n.sem <- struct{}{}:
	default:
		return // enough dials under way; mDNS will report the peer again
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() { <-n.sem }()
		ctx, cancel := context.WithTimeout(a.ctx, mdnsDialTimeout)
		defer cancel()
		if err := a.host.Connect(ctx, ai); err != nil {
			a.log.Debug("mdns peer unreachable", "peer", ai.ID, "err", err)
			return
		}
		a.log.Debug("mdns peer connected", "peer", ai.ID)
	}()
}

type mdnsCloser struct {
	svc mdns.Service
	n   *mdnsNotifee
}

func (c mdnsCloser) Close() error {
	err := c.svc.Close() // waits for the resolver, which calls HandlePeerFound
	c.n.mu.Lock()
	c.n.done = true
	c.n.mu.Unlock()
	return err
}

func startMDNS(a *Announcer) (io.Closer, error) {
	n := &mdnsNotifee{a: a, sem: make(chan struct{}, mdnsMaxDials)}
	svc := mdns.NewMdnsService(a.host, MDNSService(a.cfg.Name), n)
	if err := svc.Start(); err != nil {
		_ = svc.Close()
		return nil, err
	}
	return mdnsCloser{svc: svc, n: n}, nil
}
