package mesh

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Noticing a new network. A laptop's app changes network (another Wi-Fi, a
// cable, a VPN, a new lease), or loses it and gets it back. go-libp2p looks
// at the interfaces once a minute and closes nothing: a TCP connection
// bound to an address the machine no longer has stayed connected until
// yamux's keepalive gave up (15 to 40 s in the audit's lab), and the HTTP
// client's idle keep-alive connections to the origin stayed in its pool:
// the next origin request went out on one of them and waited the whole
// OriginHeaderTimeout (10 s) for headers that could never come, and the
// fetch failed (the gateway answered 504) though the origin answered at
// once on a new connection. Offline, each request waited so on one of the
// pool's dead connections instead of failing at once.
//
// Every netWatchEvery the node lists the addresses of the machine's
// interfaces that are up. When the list changes, it closes the HTTP client's
// idle connections, closes the libp2p connections whose local address is
// no longer the machine's, and redials the bootstrap peers that are not
// connected at once rather than after their backoff (up to 30 s after a
// network came back).

// netWatchEvery is how often the node looks at the machine's interfaces.
const netWatchEvery = 2 * time.Second

// netState is the machine's network as the node last saw it.
type netState struct {
	key   string              // the addresses of the interfaces that are up, link-local ones aside
	addrs map[netip.Addr]bool // the addresses of the interfaces that are up
}

// readNetState lists the addresses of the interfaces that are up. An
// interface without addresses, or with link-local ones only (a container's
// veth coming and going, a carrier lost for a moment), changes nothing.
func readNetState() (netState, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netState{}, err
	}
	st := netState{addrs: make(map[netip.Addr]bool)}
	var parts []string
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		as, err := ifc.Addrs()
		if err != nil {
			return netState{}, err
		}
		for _, a := range as {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			st.addrs[ip] = true
			if !ip.IsLinkLocalUnicast() {
				parts = append(parts, ifc.Name+" "+ipn.String())
			}
		}
	}
	slices.Sort(parts)
	st.key = strings.Join(parts, "; ")
	return st, nil
}

// watchNetwork calls changed whenever read's answer differs from the one
// before, looking every interval, until ctx ends. A failed read counts as
// no change.
func watchNetwork(ctx context.Context, read func() (netState, error), interval time.Duration, changed func(netState)) {
	last, _ := read()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, err := read()
		if err != nil || now.key == last.key {
			continue
		}
		last = now
		changed(now)
	}
}

// networkChanged drops what the old network left: idle HTTP connections,
// libp2p connections from addresses the machine no longer has; and redials
// the bootstrap peers now, their backoff started over.
func (n *Node) networkChanged(st netState) {
	n.boot.mu.Lock()
	for _, k := range n.boot.keepers {
		k.fresh.Store(true) // before the connections close: their drop counts as none
	}
	n.boot.mu.Unlock()
	n.client.CloseIdleConnections()
	closed := 0
	for _, c := range n.host.Network().Conns() {
		if goneLocal(c, st) {
			closed++
			_ = c.Close()
		}
	}
	n.boot.mu.Lock()
	for _, k := range n.boot.keepers {
		kick(k.kick)
	}
	n.boot.mu.Unlock()
	n.log.Info("network changed", "closed", closed, "addrs", len(st.addrs))
}

// goneLocal reports whether c's local address is an IP address the
// machine no longer has. A connection from an unspecified address (a QUIC
// socket bound to 0.0.0.0) is not judged.
func goneLocal(c network.Conn, st netState) bool {
	a, ok := ipOf(c.LocalMultiaddr())
	return ok && !a.IsUnspecified() && !st.addrs[a]
}

// ipOf is the IP address of m (IPv4-mapped ones as IPv4), if it has one.
func ipOf(m ma.Multiaddr) (netip.Addr, bool) {
	ip, err := manet.ToIP(m)
	if err != nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}
