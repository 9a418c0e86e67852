package announce

import (
	"fmt"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// ValidName reports whether name can name a mesh: 1 to 63 characters of
// a-z, 0-9 and '-', neither first nor last being '-'. The rule keeps the name
// usable in a protocol ID, a pubsub topic and a DNS-SD (mDNS) label unchanged,
// so every derived identifier contains the name as it is.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func checkName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: %q (want 1-63 of a-z 0-9 '-', not starting or ending with '-')", ErrBadName, name)
	}
	return nil
}

// Topic returns the gossipsub topic of the mesh called name:
// "/meshcdn/<name>/announce/1". The final number is the major version of
// the message format (see the package documentation); a format that old
// peers cannot read gets a new topic.
func Topic(name string) string { return "/meshcdn/" + name + "/announce/1" }

// ProtocolPrefix returns the Kademlia DHT protocol prefix of the mesh called
// name: "/meshcdn/<name>", so its DHT speaks "/meshcdn/<name>/kad/1.0.0" and
// never meets the public IPFS DHT ("/ipfs/kad/1.0.0") or another mesh's DHT.
func ProtocolPrefix(name string) protocol.ID { return protocol.ID("/meshcdn/" + name) }

// MDNSService returns the DNS-SD service name that mDNS discovery of the mesh
// called name advertises and queries: "_meshcdn-<name>._udp". Peers of other
// meshes and other libp2p programs on the LAN (which use "_p2p._udp") are not
// found.
func MDNSService(name string) string { return "_meshcdn-" + name + "._udp" }

// DHTOptions returns the options of a Kademlia DHT for the mesh called name,
// for callers (mesh.New) that build the DHT themselves, for example as the
// host's router: the mesh's protocol prefix, no bootstrap peers (the routing
// table fills from connected peers that speak the same protocol), no value
// records (the mesh only needs provider records), provider records kept in a
// bounded store (MaxProviderRecords in all, MaxProviderRecordsPerPeer per
// provider) and the given mode. Append options to change more. It panics on an
// invalid name: check it with ValidName first.
func DHTOptions(name string, mode dht.ModeOpt) []dht.Option {
	if !ValidName(name) {
		panic(fmt.Sprintf("announce: DHTOptions: invalid mesh name %q", name))
	}
	return []dht.Option{
		dht.ProtocolPrefix(ProtocolPrefix(name)),
		dht.Mode(mode),
		dht.DisableValues(),
		dht.BootstrapPeers(),
		// Provider records in a bounded store (see MaxProviderRecords).
		dht.ProviderDatastore(newProviderStore(MaxProviderRecords, MaxProviderRecordsPerPeer)),
	}
}

// HeartbeatInterval is the gossipsub heartbeat PubSubOptions sets: 700 ms
// instead of gossipsub's 1 s. The heartbeat grafts newly subscribed peers
// into the mesh and gossips IHAVE to peers outside it, so it bounds how soon
// a peer that missed a message hears of it.
const HeartbeatInterval = 700 * time.Millisecond

// PubSubOptions returns the gossipsub options an announce topic needs, for
// callers (mesh.New) that create the host's PubSub themselves: strict
// signing (every message signed by its author's peer key, unsigned ones
// rejected; also gossipsub's default), flood publishing (a peer's own
// messages go straight to every connected subscriber instead of waiting for
// the mesh: the difference between about 50 ms and a heartbeat, see
// INTEROP.md) and a HeartbeatInterval heartbeat. New uses the same options
// when it creates the PubSub itself.
func PubSubOptions() []pubsub.Option {
	params := pubsub.DefaultGossipSubParams()
	params.HeartbeatInterval = HeartbeatInterval
	params.HeartbeatInitialDelay = 50 * time.Millisecond
	return []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithFloodPublish(true),
		pubsub.WithGossipSubParams(params),
	}
}
