package mesh

import (
	"slices"
	"testing"
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
