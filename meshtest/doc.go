// Package meshtest stages a meshcdn mesh on this machine for tests, demos and
// benchmarks, in the spirit of net/http/httptest: what meshcdn's own tests,
// its demo and its benchmark program stand on, and what users test their own
// configuration with.
//
//   - Origin is an HTTP server on 127.0.0.1 serving a Site (generated from a
//     seed, or read from a directory) and its manifest, as a site's CDN
//     would: a shaped uplink shared by every client, added latency, Range
//     support that can be turned off, faults set while it runs (status
//     codes, hangs, stalls and truncation mid-body, wrong bytes), and counts
//     of the bytes it actually sent, in total and per path.
//   - Crowd is N nodes (mesh.New) of given roles on loopback with mDNS off,
//     seeds that pin the site first, then app nodes arriving on a schedule
//     (at once, staggered, or as a seeded Poisson process), each fetching a
//     list of assets through the public API. Its Report holds every node's
//     Stats, every fetch's time to first byte and completion, bytes from
//     peers and from the origin, what the origin sent, the offload, the
//     origin's egress in copies of the site, and how many other nodes each
//     node was linked to (the graph the figures come from).
//   - NewNode and WaitProvider are the small helpers tests of a single node
//     need.
//
// Everything listens on 127.0.0.1 only. Close on an Origin or a Crowd
// releases everything it started and waits for its goroutines.
package meshtest
