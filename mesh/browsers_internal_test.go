package mesh

import (
	"slices"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

func TestWithBrowserAddrs(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"app defaults: both on each wildcard",
			[]string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1", "/ip6/::/tcp/0"},
			[]string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1", "/ip6/::/tcp/0",
				"/ip4/0.0.0.0/udp/0/webrtc-direct", "/ip4/0.0.0.0/udp/0/quic-v1/webtransport",
				"/ip6/::/udp/0/webrtc-direct", "/ip6/::/udp/0/quic-v1/webtransport"}},
		{"a LAN address",
			[]string{"/ip4/10.1.2.3/tcp/0"},
			[]string{"/ip4/10.1.2.3/tcp/0", "/ip4/10.1.2.3/udp/0/webrtc-direct", "/ip4/10.1.2.3/udp/0/quic-v1/webtransport"}},
		{"already there: nothing added",
			[]string{"/ip4/127.0.0.1/udp/4002/webrtc-direct", "/ip4/127.0.0.1/udp/4001/quic-v1/webtransport"},
			[]string{"/ip4/127.0.0.1/udp/4002/webrtc-direct", "/ip4/127.0.0.1/udp/4001/quic-v1/webtransport"}},
		{"one of two there",
			[]string{"/ip4/127.0.0.1/udp/4002/webrtc-direct"},
			[]string{"/ip4/127.0.0.1/udp/4002/webrtc-direct", "/ip4/127.0.0.1/udp/0/quic-v1/webtransport"}},
		{"not IP, or not a multiaddr: untouched",
			[]string{"/dns4/example.com/tcp/1", "garbage"},
			[]string{"/dns4/example.com/tcp/1", "garbage"}},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := make([]string, len(tt.in), len(tt.in)+1) // spare capacity must stay unused
			copy(in, tt.in)
			got := withBrowserAddrs(in)
			if !slices.Equal(got, tt.want) {
				t.Errorf("withBrowserAddrs(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if spare := in[:cap(in)][len(in)]; spare != "" {
				t.Errorf("withBrowserAddrs wrote %q into its argument's spare capacity", spare)
			}
		})
	}
}

func TestSummaryOrder(t *testing.T) {
	in := []string{
		"/ip4/127.0.0.1/udp/1/webrtc-direct", "/ip4/127.0.0.1/tcp/1",
		"/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.1/udp/1/quic-v1", "/ip4/10.0.0.1/tcp/2/ws",
		"/ip6/fe80::1/udp/1/webrtc-direct", "/ip4/10.0.0.1/udp/1/quic-v1/webtransport",
		"/ip4/10.0.0.1/udp/2/webrtc-direct", "/ip6/fd00::1/udp/2/webrtc-direct",
	}
	want := []string{
		"/ip4/10.0.0.1/udp/2/webrtc-direct", "/ip6/fd00::1/udp/2/webrtc-direct",
		"/ip4/10.0.0.1/udp/1/quic-v1/webtransport", "/ip4/10.0.0.1/udp/1/quic-v1",
		"/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/2/ws",
		"/ip4/127.0.0.1/udp/1/webrtc-direct", "/ip6/fe80::1/udp/1/webrtc-direct", "/ip4/127.0.0.1/tcp/1",
	}
	var addrs []ma.Multiaddr
	for _, s := range in {
		addrs = append(addrs, ma.StringCast(s))
	}
	var got []string
	for _, a := range summaryOrder(addrs) {
		got = append(got, a.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("summaryOrder(%q) =\n%q, want\n%q", in, got, want)
	}
}
