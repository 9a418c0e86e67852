// Package e2e holds meshcdn's end-to-end tests in a real headless Chromium
// (build tag e2e). They need Debian's chromium at /usr/bin/chromium (or
// $CHROMIUM), `npm ci` run in this directory, and the browser client built
// (`npm ci && npm run build` in examples/browser); `bash .ci/run` does all
// of it.
//
// TestMain re-executes the test binary in a network namespace with only a
// loopback interface (`unshare -n`, or `unshare -r -n` when not root, then
// `ip link set lo up`) so that WebRTC offers no candidate off the machine;
// MESHCDN_E2E_NETNS=off runs in place. pages.mjs drives the pages: one JSON
// command a line from the Go test, one reply a line back.
//
// The office tests (office_test.go, TestOffice*) build a LAN inside that
// namespace: a veth pair, 10.77.0.0/24, whose far end sits in a named
// network namespace of its own (ip netns) holding Chromium at 10.77.0.2;
// the Go app nodes listen at 10.77.0.1 (and .3) on the near end, which also
// carries 198.18.0.1, where the seeds and the origin listen and which
// Chromium reaches through its default route. The page itself is served at
// 127.0.0.1 inside Chromium's namespace (a secure context, for WebTransport
// and crypto.subtle). They skip when not root, when run with
// MESHCDN_E2E_NETNS=off, or where ip netns fails.
//
//	go test -tags e2e -count=1 -run TestOffice -v ./e2e/
package e2e
