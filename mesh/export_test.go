package mesh

// GatewayParkCheck is how long a request waiting for the gateway's
// MaxBuffer may wait for a blocked write to be parked (gatewayParkCheck),
// for tests.
const GatewayParkCheck = gatewayParkCheck

// BootstrapTag is the connection manager's protection tag of bootstrap
// peers (bootstrapTag), for tests: gossipsub protects its mesh peers under
// tags of its own, so IsProtected(p, "") says nothing of ours.
const BootstrapTag = bootstrapTag

// FollowRetry is followRetry, for tests.
var FollowRetry = followRetry

// UnaskedStreamsInbound and UnaskedPeerMemory are the inbound streams and
// the memory a peer not asked for blocks holds at most, and
// SenderStreamsInbound and SenderPeerMemory those of a peer asked
// (limits.go), for tests.
const (
	UnaskedStreamsInbound = unaskedStreamsInbound
	UnaskedPeerMemory     = unaskedPeerMemory
	SenderStreamsInbound  = peerStreamsInbound
	SenderPeerMemory      = senderPeerMemory
)
