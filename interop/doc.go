// Package interop holds meshcdn's tests against other implementations of the
// same protocols: a real Kubo (build tag kubo, binary from .ci/kubo.sh named
// by $MESHCDN_KUBO) and, later, real browsers. `bash .ci/run` builds what they
// need and runs them; plain `go test ./...` skips them.
package interop
