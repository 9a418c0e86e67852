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
