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
package e2e
