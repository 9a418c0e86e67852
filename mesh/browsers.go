package mesh

import (
	ma "github.com/multiformats/go-multiaddr"
)

// withBrowserAddrs returns addrs followed by a WebRTC-direct and a
// WebTransport listen address (UDP, port chosen by the system) for every IP
// address of addrs that has no address of that transport yet: what
// Config.BrowserTransports adds. Addresses that do not parse or do not start
// with /ip4 or /ip6 are passed through untouched (validate reports the
// former). The result never shares addrs's backing array.
func withBrowserAddrs(addrs []string) []string {
	out := append([]string(nil), addrs...)
	type ip struct{ proto, value string }
	var order []ip
	has := map[ip]*[2]bool{} // WebRTC-direct, WebTransport
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil || len(a) == 0 {
			continue
		}
		first := a[0]
		if c := first.Protocol().Code; c != ma.P_IP4 && c != ma.P_IP6 {
			continue
		}
		k := ip{first.Protocol().Name, first.Value()}
		if has[k] == nil {
			has[k] = new([2]bool)
			order = append(order, k)
		}
		if _, err := a.ValueForProtocol(ma.P_WEBRTC_DIRECT); err == nil {
			has[k][0] = true
		}
		if _, err := a.ValueForProtocol(ma.P_WEBTRANSPORT); err == nil {
			has[k][1] = true
		}
	}
	for _, k := range order {
		base := "/" + k.proto + "/" + k.value + "/udp/0"
		if !has[k][0] {
			out = append(out, base+"/webrtc-direct")
		}
		if !has[k][1] {
			out = append(out, base+"/quic-v1/webtransport")
		}
	}
	return out
}
