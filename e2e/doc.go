// Package e2e holds meshcdn's end-to-end tests in a real headless Chromium
// (build tag e2e). They need Debian's chromium at /usr/bin/chromium (or
// $CHROMIUM) and `npm ci` run in this directory; `bash .ci/run` does both.
package e2e
