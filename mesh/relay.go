package mesh

import (
	"math"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/x/rate"
)

// RelayLimits bound the circuit relay v2 service (Config.RelayService) and
// the connections one address may hold, sized for browsers: every tab of an
// office behind one NAT reaches the seed from the same IP address, takes a
// reservation there (so that other tabs can signal WebRTC to it through the
// seed) and is the end of a short circuit per tab that dials it.
//
// A zero field takes its role's default (defaults.go, roleDefaults); a
// negative one means no limit. go-libp2p's own defaults, which apps keep
// (an app's relay service is Off unless set), are 128 reservations, 8 per
// IP, 32 per ASN, 16 circuits per peer, 128 KiB and 2 min per circuit, and 8
// connections per IPv4 address (IPv6 /56) with a burst of 16 new
// connections and 0.2 a second after it: a ninth tab behind one NAT got no
// reservation ("IP constraint violation"), and a ninth tab could not even
// connect to the seed (loopback, where tests run, is exempt from the
// connection limits but not from the reservation ones).
//
// The values are copied into the host when the node starts.
type RelayLimits struct {
	// Reservations is the most reservations the relay holds in all (each
	// about 1 KiB of state, refreshed by the client every few minutes).
	// Default 1024 for seeds (MaxConns), 128 for apps.
	Reservations int
	// ReservationsPerIP is the most reservations from one IP address: the
	// tabs of one office or campus NAT. Default 256 for seeds, 8 for apps.
	ReservationsPerIP int
	// ReservationsPerASN is the most reservations from one autonomous
	// system (go-libp2p looks ASNs up for IPv6 addresses only): a large
	// ISP's customers share one. Default 1024 for seeds (no tighter than
	// Reservations), 32 for apps.
	ReservationsPerASN int
	// CircuitsPerPeer is the most relayed connections open at once to or
	// from one peer. A tab that holds what a crowd wants is dialled by
	// every other tab within seconds, each dial a circuit that lives until
	// CircuitDuration or until the page closes it. Default 64 for seeds,
	// 16 for apps.
	CircuitsPerPeer int
	// CircuitBytes is the most bytes relayed in each direction of a
	// circuit before the relay resets it. Signalling a WebRTC connection
	// takes about 5 KB (SDP offer and answer, ICE candidates), identify
	// over the limited connection a few KB more; bulk data must never go
	// through the relay. Default 128 KiB for both roles.
	CircuitBytes int64
	// CircuitDuration is how long a circuit lives before the relay resets
	// it. WebRTC signalling finishes within seconds; a circuit outliving
	// it holds one of CircuitsPerPeer. Default 1 min for seeds, 2 min for
	// apps.
	CircuitDuration time.Duration
	// ConnsPerIP is the most connections the host's resource manager
	// admits from one IPv4 address or IPv6 /56 (eight times that per IPv6
	// /48), and the burst of new connections its rate limiter allows from
	// one, refilled at ConnsPerIP a minute (at least 0.2 a second).
	// Default 256 for seeds, 8 for apps.
	ConnsPerIP int
}

// noLimit stands for "no limit" in go-libp2p's integer limits.
const noLimit = math.MaxInt32

// limit maps a resolved limit (negative: none) to go-libp2p's value.
func limit(v int) int {
	if v < 0 {
		return noLimit
	}
	return v
}

// withDefaults returns l with every zero field set from d.
func (l RelayLimits) withDefaults(d RelayLimits) RelayLimits {
	set := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	set(&l.Reservations, d.Reservations)
	set(&l.ReservationsPerIP, d.ReservationsPerIP)
	set(&l.ReservationsPerASN, d.ReservationsPerASN)
	set(&l.CircuitsPerPeer, d.CircuitsPerPeer)
	set(&l.ConnsPerIP, d.ConnsPerIP)
	if l.CircuitBytes == 0 {
		l.CircuitBytes = d.CircuitBytes
	}
	if l.CircuitDuration == 0 {
		l.CircuitDuration = d.CircuitDuration
	}
	return l
}

// relayResources returns the relay service's resources for l (defaults
// applied).
func relayResources(l RelayLimits) relayv2.Resources {
	rc := relayv2.DefaultResources()
	rc.MaxReservations = limit(l.Reservations)
	rc.MaxReservationsPerIP = limit(l.ReservationsPerIP)
	rc.MaxReservationsPerASN = limit(l.ReservationsPerASN)
	rc.MaxCircuits = limit(l.CircuitsPerPeer)
	switch {
	case l.CircuitBytes < 0 && l.CircuitDuration < 0:
		rc.Limit = nil // unlimited circuits: go-libp2p's "no limit"
	default:
		rc.Limit = &relayv2.RelayLimit{Data: l.CircuitBytes, Duration: l.CircuitDuration}
		if l.CircuitBytes < 0 {
			rc.Limit.Data = math.MaxInt64
		}
		if l.CircuitDuration < 0 {
			rc.Limit.Duration = math.MaxInt64
		}
	}
	return rc
}

// relayServiceOption is the host's relay service with cfg's limits. The
// resources are passed once, whole: relayv2.WithResources overwrites any
// limit given before it.
func relayServiceOption(cfg Config) libp2p.Option {
	return libp2p.EnableRelayService(relayv2.WithResources(relayResources(cfg.Relay)))
}

// connLimitOptions are the resource manager's per-address connection limit
// and connection rate limiter for cfg.Relay.ConnsPerIP. Loopback stays
// unlimited, as in go-libp2p.
func connLimitOptions(cfg Config) []rcmgr.Option {
	n := limit(cfg.Relay.ConnsPerIP)
	v4 := []rcmgr.ConnLimitPerSubnet{{PrefixLength: 32, ConnCount: n}}
	v6 := []rcmgr.ConnLimitPerSubnet{{PrefixLength: 56, ConnCount: n}, {PrefixLength: 48, ConnCount: min(noLimit, 8*n)}}
	rps := max(0.2, float64(n)/60)
	burst := n
	if cfg.Relay.ConnsPerIP < 0 {
		rps, burst = 0, 0 // rate.Limit{}: no limit
	}
	lim := rate.Limit{RPS: rps, Burst: burst}
	rl := &rate.Limiter{
		NetworkPrefixLimits: []rate.PrefixLimit{
			{Prefix: netip.MustParsePrefix("127.0.0.0/8")},
			{Prefix: netip.MustParsePrefix("::1/128")},
		},
		SubnetRateLimiter: rate.SubnetLimiter{
			IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: lim}},
			IPv6SubnetLimits: []rate.SubnetLimit{{PrefixLength: 56, Limit: lim}, {PrefixLength: 48, Limit: rate.Limit{RPS: 2.5 * rps, Burst: min(noLimit, 5*burst)}}},
			GracePeriod:      time.Minute,
		},
	}
	if cfg.Relay.ConnsPerIP < 0 {
		rl.SubnetRateLimiter = rate.SubnetLimiter{}
	}
	return []rcmgr.Option{rcmgr.WithLimitPerSubnet(v4, v6), rcmgr.WithConnRateLimiters(rl)}
}
