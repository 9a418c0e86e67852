// Package fetch gets content by CID the way meshcdn promises: never slower
// than the origin by more than a few milliseconds, never a wrong byte, and as
// many bytes from peers as possible.
//
// A Fetcher (New) runs boxo bitswap on a libp2p host the caller owns, serving
// what the caller's Store holds to other peers within a byte rate (an average:
// Config.ServeBurst may go at once) and a concurrency cap. Open (or OpenPath,
// given a manifest) returns a Reader, an io.ReadSeekCloser that streams the
// file in order as its blocks arrive:
//
//	r, err := f.Open(ctx, fetch.Target{Cid: root, Size: size, Nodes: nodes, URL: "https://cdn.example/app.js"})
//	...
//	defer r.Close()
//	io.Copy(w, r)
//	st := r.Stats() // bytes from local / peer / origin, TTFB, TTLB, per peer
//
// # Fetch, step by step
//
//  1. Each leaf (1 MiB of the file, unixfs-v1-2025) in the read-ahead window
//     (Config.ReadAhead leaves from the reader's position) is first looked up
//     in the Store. A Reader holds at most Config.WindowBytes (8 MiB) of
//     leaves in memory: those fetched further ahead are stored and read
//     back from the Store when the reader nears them (counted once).
//  2. Then a bitswap session asks connected peers; the providers of the root
//     that Config.Providers (the announce package's table) names are
//     connected first, so the session's wants reach them. When a provider
//     is known, the first message sent to one (the first connected that
//     has lately delivered to this node, else the first connected) asks
//     for the block: the Reader sends it a want-block for the first leaf
//     it needs, one bitswap message of its own outside the session's
//     per-peer queue, written before the session's want-have broadcast to
//     every connected peer goes out (firstwant.go; the two travel on
//     separate streams, so the provider may take the want-have first and
//     answer HAVE as well).
//     The session alone would ask with a want-have and send the want-block
//     after the HAVE, through a queue that sends a peer at most one message
//     per 20 ms (boxo's minSendMessageDelay, a constant): a peer hit took
//     22 ms on loopback, 41 ms right after another fetch from the same
//     peer; with the want-block first it takes one round trip (1 to 2.5
//     ms, BenchmarkPeerHit). The session's want-haves are the hedge: the
//     other peers answer HAVE, and if the provider asked has not delivered
//     when the queue lets the next message go, the session asks one of
//     them for the block. The guard hands the copies of that leaf to the
//     Reader itself (bitswap drops a block its session has not yet
//     recorded as wanted); a later copy, from the hedge, is counted as a
//     duplicate, and the want is cancelled at the provider if it did not
//     send the leaf. At most one leaf per fetch is asked this way.
//     Providers are looked up again every 2 s while a leaf waits on peers
//     (refresh.go): up to 8 new ones, at random, are connected and the
//     leaves waited on for a PeerTimeout are asked again on a new session,
//     so a long fetch also asks the holders that finished after it opened
//     (TestLateProviderAsked).
//  3. The origin (a plain file fetched with HTTP Range requests, each leaf
//     checked against the leaf CID the inner nodes give, or a trustless
//     gateway's raw blocks) joins at once when no provider is known (a cold
//     start costs what a plain request does), and otherwise when peers have
//     not delivered the first block within Config.PeerTimeout (200 ms), have
//     stalled for twice their recent pace between leaves (at least
//     PeerTimeout, at most half of Config.StallTimeout: a holder serving a
//     crowd sends each fetcher leaves in bursts), or the reader has waited
//     that long on a block, or the reader waits on peers whose recent rate is
//     under half of the origin's share: what the origin's requests have given
//     this Fetcher together (each request's rate times the requests in flight
//     with it; known once the origin has been used), divided among the nodes
//     known to fetch the same content (Config.Crowd), who share it. When a
//     provider that holds the content (not one still fetching it) has sent
//     this Fetcher blocks or HAVEs within StallTimeout, the origin joins as a
//     hedge per leaf: it takes only the leaf the reader waits on, once the
//     reader has waited the origin's time for a leaf if peers are slower than
//     its share, else once it has waited the first block's time (before any
//     peer delivered) or four times as long as peers get for a leaf (at most
//     half of StallTimeout; as long, when no crowd is known and a peer asked
//     for that leaf has since sent a later one and not it: a seed that dropped
//     a damaged block); it takes every leaf it may, as below, only once no
//     holder is serving or the peers have sent nothing for as long, and goes
//     back to hedging once they send again (TestBusyHolderHedgedPerLeaf: a
//     holder at 3 MiB/s and a faster idle origin; the origin took 11 of 12 MiB
//     before, none now). A leaf the reader waits on that every peer asked for
//     has answered DONT_HAVE of, with no HAVE of it standing and no crowd
//     known (a holder that dropped a damaged block), goes to the origin at
//     once, not after the peer timeout (TestLeafRefusedByHolder; in a crowd a
//     member still fetching says DONT_HAVE of what it will soon send). For the
//     first block peers get the origin's time for a leaf besides PeerTimeout
//     (measured from this Fetcher's origin requests, 1 s until measured) when
//     a peer has said HAVE of it or a provider that holds the content has sent
//     this Fetcher a block or a HAVE within Config.StallTimeout: the origin,
//     asked then, would bring it no sooner, and in a crowd it is shared. Until
//     a peer has delivered, only the leaf the reader needs first is asked of
//     peers: bitswap sends wants that go out together in random order. Peers
//     go on: each leaf goes to whichever source delivers a verified copy
//     first, and the other request is cancelled. The first origin request goes
//     alone, the next ones Config.OriginConcurrency at once.
//  4. Every block is checked against its CID before it is stored or handed
//     to the reader. Bitswap names a received block by the hash of its
//     bytes, so a corrupted block arrives under a CID no fetch asked for: its
//     sender is penalised (Config.Penalty): its messages are dropped, bitswap
//     sees it as disconnected and its requests are refused. A provider that
//     advertised the content and, within Config.StallTimeout, sent neither a
//     block nor a HAVE for it although connected all that time is ignored
//     the same way, for at most 30 s (a busy but honest seed can be silent
//     for a while; one that could not be reached or lost its connection,
//     such as a seed restarting, is not ignored). A peer's HAVEs are not
//     trusted alone until it delivers a block: bitswap hears two of them
//     at a time until then. A block asked of such a peer that does not come
//     within four times its round trip plus the fastest delivering peer's
//     time per block (at least 100 ms, at most 2 s), while another peer said
//     HAVE of it, is asked of the other (the peer is reset in bitswap, which
//     cannot take back a HAVE); a peer with two such late blocks that
//     delivers nothing in 2 s is penalised. A peer penalised for what it
//     did not send (late or silent) that then sends a wanted block was
//     busy, not lying: the block is taken and the penalty lifted. A
//     reader that waits 3 s on a leaf asked of peers asks it again on a
//     new bitswap session. A want-block that has waited 500 ms at a peer
//     that delivers (busy, in promises.go) while another peer said HAVE of
//     the block, was not asked for it and has fewer of this node's
//     want-blocks open, is moved: bitswap hears DONT_HAVE from the busy
//     peer and asks again among the holders (TestWantsMovedFromBusyHolder).
//     Bitswap's session otherwise waits on the peer it first asked, which
//     in a crowd is one of the first holders, at its serving cap, while
//     members that hold the leaf sit idle.
//  5. Fetched blocks go to the Store within its quota; a fetch larger than
//     the quota streams all the same. When every block is stored the root is
//     named with Store.AddRoot, which is how the announcer learns of it.
//  6. A cold fetch (no provider known, so from the origin) is told to
//     Config.Advertiser when its origin requests start, and again if it
//     ends without the content stored whole: peers that want the same
//     content meanwhile ask this node and get each block from it as it
//     arrives, so a flash crowd that starts cold pays the origin for about
//     one copy.
//  7. Striping (policy.go): with Config.Crowd naming other peers fetching the
//     same root at the same time, the nodes split the leaves they take from
//     the origin, each taking a different share and the rest from the others
//     as they arrive. Leaf i (0-based, in file order) belongs to the member p
//     of the stripe, the crowd and this node less penalised peers, with the
//     highest score(root, p, i): the first 8 bytes, read big-endian, of
//     SHA-256(root CID bytes || peer ID bytes || i as 8 bytes big-endian), CID
//     and peer ID in their binary forms (a tie goes to the greater peer ID
//     bytes). Every member computes the same owners without a coordinator
//     (rendezvous hashing), and a member that joins or leaves moves only the
//     leaves it takes or held. Once the origin has joined (step 3) a node asks
//     it only for its own leaves; another's leaf goes to the origin when no
//     peer has said HAVE of it within Config.PeerTimeout plus the origin's
//     time for the leaf (its place in its owner's queue of
//     Config.OriginConcurrency requests times one leaf's time, measured from
//     this Fetcher's origin requests, 1 s until measured; for an owner this
//     node is not connected to, whose copy comes through others, twice
//     PeerTimeout plus that time more) after it was asked and the origin
//     joined, or when the reader has waited PeerTimeout plus one leaf's origin
//     time on it. A node that announces a fetch and sends nothing thus delays
//     no one by more than PeerTimeout and the origin's time; crowd members the
//     stripe gives a leaf are judged as silent providers are (step 4) and
//     penalised, which takes them out of the stripe (a member given none has
//     nothing to send but what it takes from others). A striping node tells
//     Config.Advertiser of its fetch when its origin requests start, provider
//     known or not, so that the others count it in, and one that knows of no
//     holder of the whole content (only other fetchers, or nobody) as soon as
//     it asks peers: it may be the first of a crowd that starts together, and
//     the others fetching connect to it and ask it for the leaves it gets. It
//     counts itself a member of its stripe only Config.PeerTimeout after it
//     told Config.Advertiser (the others must have heard of it): until then,
//     knowing of others, it owns no leaf, and knowing of none, every leaf. A
//     leaf a peer has said HAVE of goes to the origin only when overdue, even
//     if this node owns it. While the crowd knows a peer that holds the whole
//     content (Holders) and peers have delivered a block of this fetch (or,
//     before any has, for a generation from its start: PeerTimeout plus the
//     longer of one leaf's origin time and the fetch's peer pace), no leaf
//     ahead of the reader goes to the origin, this node's own included: the
//     content comes through the mesh, and the origin takes only a leaf the
//     reader has waited on (a connected holder gets up to four generations
//     for the first block, at most StallTimeout/2; a reader waiting on a leaf
//     a peer said HAVE of, beside a connected holder or with leaves from
//     peers outside the stripe, gives the mesh four waves). When the Crowd
//     tells when each member began (FetchStarts), the member that began
//     first, alone, owns the leaves it can have taken from the origin by
//     the time the next node began: the time between them at
//     OriginConcurrency leaves per leaf's origin time, from leaf 0; the
//     others rank after it for those leaves. Config.NoStriping turns
//     striping off.
//  8. With the origin failed (see below) and no block from anyone for
//     Config.StallTimeout, or at once when no peer is known to hold the
//     content and none has sent any, Read returns an error wrapping
//     ErrUnavailable and the origin's error; the blocks fetched so far stay
//     in the Store. An origin file that changed counts as a failed origin
//     (error matching ErrChanged): the fetch fails at once if no peer is
//     known to hold the content, else peers may still complete it.
//
// # What an origin must support
//
// A plain origin (Target.URL) is any HTTP server that serves the file's
// bytes at its URL:
//
//   - Range requests (RFC 9110: "Range: bytes=A-B" answered 206 with a
//     Content-Range) are what lets a fetch take single leaves from the
//     origin while peers give the rest. An origin that ignores Range and
//     answers 200 with the whole file works too: the first such answer
//     marks the file and the origin (scheme and host), and later fetches
//     of the file, and of any file from the origin until it answers one
//     Range with 206, read each file once, whole ("Range: bytes=0-"),
//     cutting the body into leaves and verifying each as it comes; such a
//     read cannot share a file between the origin and peers leaf by leaf.
//     An origin that honours Range for some files only (a CDN answering a
//     cache miss whole) has just those read whole. The answer that finds
//     it out gives its first leaf and is then closed: it costs what the
//     origin had sent by then (socket buffers, a few MiB on loopback).
//   - Sizes: a Content-Range total or a whole-file Content-Length that
//     differs from the Target's size, a 416 for a range inside that size,
//     or a leaf whose bytes do not hash to its CID mean the file changed
//     since the manifest was built: the origin counts as failed with a
//     *ChangedError (ErrChanged), which fails the fetch at once unless a
//     peer is known to hold the content the Target names (peers then
//     complete it, or it fails with that error after StallTimeout). Load
//     the manifest again.
//   - ETags are not needed for assets (the CIDs say what is what); a
//     manifest URL that answers If-None-Match with 304 saves a node that
//     follows the site a download per check (mesh.Node.Follow).
//   - Timeouts: the response headers must come within
//     Config.OriginHeaderTimeout and each 16 KiB of the body within
//     Config.OriginIdleTimeout (10 s each by default): a trickle of bytes
//     does not keep a request alive. A hung origin counts as a dead one,
//     its error matches context.DeadlineExceeded.
//
// An origin that fails (a status other than 200/206, a refused connection,
// a timeout, a changed file) is not asked again within the fetch; a status
// is an *OriginStatusError. A 429 or 503 is first asked again after its
// Retry-After (1 s without one, plus up to a quarter of jitter), at most
// twice and only for waits up to 5 s: an origin shedding a crowd's load
// says when to come back. With no
// peer known to hold the content and none having sent any, the fetch then
// fails at once with ErrUnavailable wrapping the cause; otherwise peers get
// until Config.StallTimeout. Errors mid-body (a cut connection) are retried
// up to three times.
//
// # Hostile peers
//
// boxo's bitswap is wrapped where it trusts its peers (issue 11):
//
//   - Serving: boxo's server writes each message synchronously in one of a
//     few workers, with a deadline of 2 s plus the size at 12.5 KB/s, so a
//     peer that never reads held every worker for ~86 s per 1 MiB block.
//     Here a send of blocks has a deadline of 2 s plus its size at
//     128 KiB/s, at most 4 run at once per peer (a fifth waits its turn, and
//     is dropped after 1 s only if no send to that peer has ended for 2 s),
//     a peer that misses a deadline is served one send at a time
//     for a minute, and one that misses again is disconnected and refused
//     for a minute; the server runs max(8, Config.ServeConcurrency/2)
//     workers (a seed: 32). What remains in boxo: a dropped send counts as
//     sent, so that peer must ask again, and four peers that never read
//     can hold a seed's workers for one deadline.
//   - Reading: boxo decodes any message up to 4 MiB whole. Inbound bitswap
//     streams are read through a framing filter that resets a stream at a
//     message whose want list is over 128 KiB (boxo keeps 1024 wants per
//     peer anyway), reserves each message's size with the resource
//     manager while it is read, and closes streams idle for 2 min between
//     messages or slower than 128 KiB/s within one.
//   - HAVEs: a HAVE is an answer to boxo's sessions, which then wait on
//     that peer; see step 4 above for how broken ones are handled. boxo's
//     own search stays off (providers are found by root here), so the
//     reader's re-ask on a new session is what recovers a block whose only
//     asked peer lied.
//
// # Accounting
//
// Reader.Stats and Fetcher.Stats return plain structs: bytes from the local
// store, from peers and from the origin (the first verified copy of each
// leaf), duplicate bytes (the cost of hedging), bytes per peer, time to
// first byte and to last block, and the offload ratio (peer bytes over
// network bytes). Origin bytes are a budget, so what the origin sent is
// counted besides what was kept: OriginSentBytes is every response body
// byte read off the wire, kept or thrown away (a hedge cut off, a copy
// that lost the race, bytes skipped in a whole-file answer), plus for
// each response closed before its end an estimate of what was in flight
// (that response's rate times the time its headers took, at most 256 KiB
// and what remained); OriginWastedBytes is what of it was not a first verified
// copy. With Config.PrometheusRegisterer the same figures are exported as
// meshcdn_fetch_* metrics (origin_sent_bytes_total for what origins
// sent); labels are only source and result.
//
// # Bitswap tuning
//
// boxo's defaults give about 0.13x of plain HTTP when a file is streamed in
// order; the server's MaxOutstandingBytesPerPeer (1 MiB, one block in flight)
// is the limit. New sets it to Config.MaxOutstandingBytesPerPeer (2 MiB) and
// keeps Config.ReadAhead (32) wants in flight per fetch: bitswap's client
// sends wants to a peer at most every 20 ms, so the window must cover what
// arrives in that time. Wants carry priorities by urgency (how far ahead of
// its reader a leaf is), so every reader's next leaf goes out first, after
// what the peer already has in flight. The server reads a block when it
// takes the want, and a holder at its serving cap keeps it until the cap
// lets it go: with 8 MiB one peer's wants took 8 of a busy holder's reads,
// and in a flash crowd of 50 apps the others waited past the peer timeout
// and went to the origin (origin copies median 15.5 with 8 MiB against 11
// with 2, 4 interleaved pairs), while a peer fetch kept its throughput with
// 2 (0.46-0.48 of the ceiling with either) and held 8 MiB less
// (BenchmarkFetchMemory). A block the peer cancels while it waits there
// (the peer got it from another holder) is not sent, as boxo's server
// sends it (cancels.go). With Config.ServeEvenly (off by default; mesh's
// seeds set it) the server takes a block a reader waits on first, then the
// requests of the peer sent the fewest bytes lately, not boxo's order
// (serveorder.go). It turns off bitswap's own
// provider search (it would look up leaf CIDs, which the provider table
// does not hold; providers are found by root here). A Fetcher reads a peer's next block
// only while the blocks it has received and not yet stored come to less
// than 4 MiB (waiting at most a second for its store), so that a store
// that falls behind holds the peer's sends back rather than received
// blocks piling up in memory (backlog.go).
//
// # Performance
//
// Measured on the 2-core CI machine, loopback TCP, client and server in one
// process, 128 MiB, medians of interleaved runs
// (go test -run '^$' -bench 'ColdStart|Throughput' -benchtime 1x ./fetch/):
//
//   - Cold start (no provider known): first byte 1.3 ms after a plain
//     http.Get's, median of 30 runs.
//   - Origin fetch through the Reader: 0.32x to 0.37x of http.Get's
//     throughput, 1.7 to 2.1 CPU s/GiB (http.Get: 0.5 to 0.6).
//   - Peer fetch through the Reader: 0.17x to 0.18x, 3.2 to 4.0 CPU s/GiB,
//     with 1.8 of the 2 cores busy: it is CPU-bound.
//   - The ceiling of any verified, encrypted peer fetch on that machine:
//     0.36x to 0.37x. The benchmark measures it in the same run: every byte
//     must be hashed once (sha2-256), sealed and opened once (AES-GCM, what
//     TLS chose) and carried over loopback as http.Get carries it, and
//     NumCPU over that CPU time per byte bounds the rate. The peer fetch
//     runs at 0.47 of it; the rest of its CPU goes to bitswap's framing and
//     copies (yamux, protobuf, msgio), system calls and scheduling.
//   - Memory: while a 64 MiB asset streams from a peer (both ends in one
//     process, on badger), the Go heap holds 60 to 81 MiB more live data
//     than the two idle nodes, 83 to 141 MiB in use with garbage not yet
//     collected (go test -run '^$' -bench FetchMemory -benchtime 1x
//     ./fetch/), before the bounded window. Of it, the Reader's window
//     was up to Config.ReadAhead leaves (32 MiB); it is now
//     Config.WindowBytes (8 MiB). The rest is bitswap's and yamux's
//     message buffers on both ends (pooled, up to 2 MiB each: a heap
//     profile at the peak shows libp2p's buffer pool as the largest part)
//     and badger's memtables. With the window, on a machine at load
//     average 20: 71 to 80 MiB live for the fast reader, 72 to 78 for the
//     player (the player's heap in use 72 to 125 MiB; main's run beside
//     it 78 live, 116 in use).
package fetch
