package mesh

// GatewayParkCheck is how long a request waiting for the gateway's
// MaxBuffer may wait for a blocked write to be parked (gatewayParkCheck),
// for tests.
const GatewayParkCheck = gatewayParkCheck
