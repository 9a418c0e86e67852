// Package announce tells a meshcdn mesh what this peer holds and learns what
// other peers hold.
//
// Fast and local: HAVE and DROP messages on the mesh's gossipsub topic, and
// mDNS to find the mesh's peers on the LAN. Slow and global: provider
// records in the mesh's own Kademlia DHT, looked up when gossip knows no
// provider. What the Announcer learns goes into its provider Table, which
// implements libp2p's routing.ContentDiscovery so that the fetch package and
// bitswap sessions are seeded from it.
//
// # Wiring
//
// mesh.New creates the host's gossipsub with PubSubOptions and the mesh's
// DHT with DHTOptions (it may also be the host's router), and passes both,
// with the store as Holdings, in Config; the Announcer then closes neither.
// Left nil, the Announcer creates and closes its own. The fetch package
// takes Announcer.Table() as its routing.ContentDiscovery.
//
// # Names
//
// A mesh has a name (ValidName: 1-63 of a-z, 0-9, '-'). From it derive
//
//	gossipsub topic      /meshcdn/<name>/announce/1        Topic
//	DHT protocol prefix  /meshcdn/<name>  (/meshcdn/<name>/kad/1.0.0)  ProtocolPrefix
//	mDNS service         _meshcdn-<name>._udp               MDNSService
//
// so two meshes never see each other's messages, records or LAN peers, and
// the public IPFS DHT (/ipfs/kad/1.0.0) is never joined by this package: a
// user who wants it passes such a DHT in Config.DHT, explicitly.
//
// # Wire format, versions 1 to 3
//
// Every message is the data of one gossipsub message on the mesh's topic.
// The gossipsub envelope must be signed by the author's peer key (gossipsub's
// StrictSign, the default of both go-libp2p-pubsub and @libp2p/gossipsub):
// the author of the pubsub message is the peer the message speaks for.
// Messages without a signature are rejected. The data is:
//
//	offset  size  field
//	0       1     version: 0x01, or 0x02 for FETCH (see below). Any other
//	              value: ignore the message (a newer format; do not
//	              penalise the sender).
//	1       1     kind: 0x01 HAVE (the author holds the roots), 0x02 DROP
//	              (it no longer holds them), in version 1 only; 0x03 FETCH
//	              (it is fetching them), in version 2 only. Other values,
//	              or a kind in the other version: reject.
//	2       2     ttl: unsigned 16-bit big-endian, seconds. HAVE and FETCH:
//	              1..65535, how long the receiver may believe it; the author
//	              announces again (or sends DROP) before it runs out. DROP: 0.
//	4       2     count: unsigned 16-bit big-endian, the number of roots
//	              that follow, at least 1.
//	6       ...   count times:
//	                1 byte   length L of the CID, 1..64
//	                L bytes  the binary CID: CIDv1 (version varint 0x01,
//	                         codec varint, multihash), the multihash
//	                         sha2-256 (0x12) with a 32-byte digest. Any codec
//	                         is accepted; meshcdn content uses raw (0x55) and
//	                         dag-pb (0x70), 36 bytes each.
//
// Nothing may follow the last root. A message is at most 16384 bytes
// (MaxMessageSize); a sender splits longer lists into several messages, so
// one message carries up to 442 sha2-256 roots. A receiver rejects, whole,
// a message that is too long, truncated, has trailing bytes, a count of 0, a
// bad kind (or a kind of the other version), a HAVE or FETCH with ttl 0, a
// DROP with ttl not 0, a length byte of 0 or
// above 64, or a root that is not a CIDv1 of a sha2-256 multihash. A root
// repeated within a message counts once. Varints inside CIDs must be minimal
// (as multiformats writes them), so a valid message without repeated roots
// has exactly one encoding.
//
// Example: a HAVE, ttl 180 s, of two roots, raw
// bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am ("hello\n") and
// dag-pb bafybeihcldjer7njjrrxknqh67cestxa7s7jf4nhnp62y6k4twcbahvtc4, 80
// bytes:
//
//	01 01 00b4 0002
//	24 01 55 1220 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
//	24 01 70 1220 e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317
//
// a DROP of the first root, 43 bytes:
//
//	01 02 0000 0001
//	24 01 55 1220 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
//
// and a FETCH, ttl 120 s (FetchingTTL), of the second root, 43 bytes:
//
//	02 03 0078 0001
//	24 01 70 1220 e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317
//
// (spaces only for reading; the bytes are contiguous). ExampleEncode prints
// all three.
//
// Version 2 has version 1's layout and one kind, FETCH: the author has
// started to fetch the roots (from the origin) and serves their blocks as
// they arrive. It is a version of its own, not a third kind of version 1,
// so that peers that read only version 1 (meshcdn before FETCH, and the
// browser client of examples/browser until it learns it) ignore it without
// penalising the sender, as they ignore any unknown version, while HAVE and
// DROP, still sent as version 1, stay readable by every peer. What such a
// peer misses is only the hint: it learns the author as a holder from its
// HAVE once the fetch is done, and until then fetches from the origin or
// from the peers it knows.
//
// Version 3 carries one kind, ADDRS (0x04): where the author can be
// dialled. Its header is version 1's (version 0x03, kind 0x04, ttl 1..65535
// seconds, count), and the count, 1..8 (MaxAddrs), is of addresses, each a
// 2-byte big-endian length, 1..1024, and that many bytes of a binary
// multiaddr; nothing may follow the last. A receiver rejects, whole, an ADDRS
// that breaks these rules, and ignores a version 3 message of another kind
// (kinds added later), as it ignores an unknown version. A node whose
// Config.AnnounceAddrs is set (default false) sends ADDRS
// (its host's addresses, ttl AddrsTTL = 30 min) just before a HAVE or FETCH
// (a summary's too), unless it sent the same addresses within the last 5
// s: gossip relays each HAVE and FETCH to peers that may have missed the
// earlier ADDRS (in a crowd that starts cold the first announcements go out
// before the gossipsub mesh forms and reach only the author's neighbours).
// A receiver puts the addresses in its peerstore for the ttl, at most
// AddrsTTL: an author's ADDRS replaces the addresses its earlier one gave,
// and the peerstore keeps those of the 1,024 authors heard from last (keys
// are free: without the bound, ADDRS under a new key per message filled
// the peerstore until libp2p's cap of a million addresses dropped honest
// peers' too). Gossip
// relays a HAVE or FETCH to peers that are not the author's neighbours: the
// fetch package dials the providers and the fetchers of a stripe the Table
// names, and without addresses could reach only those it happened to be
// connected to. Measured in the demo site's cold crowd of 50 apps on
// 127.0.0.1, each dialling 3 others: 3,100-4,800 dials of providers and
// stripe members failed with "no addresses" a run, 110-430 with ADDRS;
// the origin sent about 12 copies of the site instead of 20, but the crowd
// took about 80 s instead of 40 (nodes then wait on holders busy at their
// serving caps while the origin idles), which is why it is off by default.
// The addresses are the author's word, signed like every message: a wrong
// one costs a failed dial, since a dial checks the peer ID. Peers that
// read only versions 1 and 2 (meshcdn before ADDRS, the browser client,
// which dials through relays and WebRTC) ignore ADDRS.
//
// In JavaScript, with multiformats' CID (already a dependency of Helia):
//
//	const v = new DataView(data.buffer, data.byteOffset, data.byteLength)
//	if (data[0] !== 1 && data[0] !== 2) return // unknown version: ignore
//	const kind = data[1], ttl = v.getUint16(2), count = v.getUint16(4)
//	if ((kind === 3) !== (data[0] === 2)) throw new Error('bad kind') // reject
//	let off = 6; const roots = []
//	for (let i = 0; i < count; i++) {
//	  const len = data[off]
//	  roots.push(CID.decode(data.subarray(off + 1, off + 1 + len)))
//	  off += 1 + len
//	}
//	// plus the checks above: off === data.length, kind and ttl rules, ...
//
// A browser marks a fetch the same way: it writes 0x02 as the version and
// 0x03 as the kind, a ttl of 120, and the roots, and publishes it when it
// starts to fetch content from the origin that no known peer holds (a
// HAVE, version 1, when the content is held whole; a DROP if it gives up).
// Reading, it keeps, per (author, root), whether the last message was a
// FETCH: those are the peers fetching the root with it, among which it may
// split the origin's leaves (striping, see the fetch package); all of them
// are providers it may ask for blocks.
//
// Why this encoding: a fixed six-byte header and length-prefixed binary CIDs
// are read in a dozen lines of JavaScript with a DataView and multiformats,
// with no protobuf compiler or runtime in the browser bundle. Everything
// protobuf would add (sender, sequence number, signature) the gossipsub
// envelope, itself protobuf, already carries. A fixed layout has one
// encoding per message, so the fuzz test can demand that decoding and
// re-encoding give the same bytes, and its size is exact: 6 + 37 bytes per
// root. The version byte comes first so that a future format can change
// everything after it; a format old peers cannot read also gets a new topic
// (…/announce/2).
//
// # Semantics
//
// A receiver records (author, root) pairs from HAVE until ttl runs out
// (capped by TableConfig.MaxTTL), and removes them on DROP. A peer sends
// HAVE for content it newly holds at once, batching whatever is waiting;
// DROP at once when its store evicts or removes content; and a summary (HAVE
// of everything it holds) every SummaryInterval (1 min, ±10%) and when peers
// join the topic (at most one every 500 ms), so that a late joiner or a peer
// that just connected learns the state without asking. TTL defaults to 3 ×
// SummaryInterval, so a peer that leaves without a DROP is forgotten within
// three summaries. A browser peer does the same: it sends its summary when a
// peer subscribes to the topic (js-libp2p's subscription-change event), since
// a publish right after connecting may reach nobody.
//
// go-libp2p-pubsub learns a peer's topics only at the start of each stream
// the peer writes to it, and loses them, or its stream to the peer, in
// ways that last as long as the connection: its own stream to the peer
// dies while the connection stays up (a duplicate connection closing, a
// write to a slow reader timing out), a closed stream's cleanup runs after
// the peer's new stream (a quick reconnect), or it gives up restarting a
// dying stream (4 times in 10 minutes). Nothing it publishes reaches that
// peer then, and pubsub never notices. The Announcer repairs it from its
// side: a peer that left the topic while still connected and is not back a
// second later has its pubsub streams reset, so that both sides start new
// streams and tell each other their topics again (Stats.Resubscribes, at
// most twice a minute per peer); a peer that runs pubsub but lacks a pubsub
// stream in either direction, at two looks 3 s apart (after it connects or
// leaves), is closed and dialled again by the node that dialled it
// (Stats.Redials, at most 3 times in 10 minutes per peer). See
// resubscribe.go.
//
// A peer sends FETCH for content it has only started to fetch, from the
// origin, when no peer was known to hold it (Announcer.Fetching, ttl
// FetchingTTL = 120 s), and DROP if that fetch ends without the content
// held. Its blocks then arrive at that peer over the fetch: bitswap there
// sends each wanted block as it comes (and DONT_HAVE for one not there yet,
// if asked so), so peers that want the same content at the same time get it
// from the first one instead of each from the origin. A fetcher treats such
// a provider like any other: it races it for the peer timeout and hedges to
// the origin when it is slow. Once the content is held whole the peer sends
// an ordinary HAVE. The Table lists a FETCH's author among the root's
// providers and, until a HAVE, a DROP or the TTL ends it, among its
// fetchers (Table.Fetchers, at most TableConfig.MaxFetchers = 64, those
// with evidence first): the fetch package splits the origin's leaves among
// them. Fetch announcements are not delayed: Fetching wakes the fetch loop,
// which publishes at once whatever is queued (calls made while a publish
// is under way share the next message); on loopback a peer lists the
// author as a fetcher within a few milliseconds. Peers that are not
// neighbours hear of each other through the gossipsub mesh, which forms at
// heartbeats (HeartbeatInterval): in a cold crowd of 50 real hosts on
// 127.0.0.1 starting within 100 ms, each dialling 3 earlier ones
// (BenchmarkFetchCrowd50, on 2 cores shared with other jobs, load average
// 13 to 30), half the pairs knew of each other 0.45-0.8 s after the
// author's call, 95% within 1.1-2.8 s, and every node knew every other 3-6.5
// s after the first start; a node whose mesh formed after a fetch was
// announced learns of it from the author's next summary (at most one
// SummaryInterval later; once, 1 of 50 nodes missed one author for longer
// than 30 s).
//
// Messages of one author can arrive out of order through the mesh. The
// Table orders them by the gossipsub sequence number, which go-libp2p-pubsub
// and @libp2p/gossipsub both count up per author from its start time in
// nanoseconds: a HAVE, FETCH or DROP of a root changes nothing when a later
// message of the same author has already set that root's entry (TableStats.Stale
// counts them). A DROP that overtakes the HAVE before it still loses: the
// table keeps no trace of removed entries, and the late HAVE re-adds the
// entry until its TTL runs out; a fetcher that asks that peer gets
// DONT_HAVE.
//
// # Summary request, version 1
//
// A peer that connects to another learns at once what it holds by asking
// it, instead of waiting for its gossip (which reaches a new neighbour only
// after the topic subscription is exchanged, and sometimes not before the
// first fetch). A node asks every peer of the mesh whose identify lists the
// protocol, once per time connected; a node started with bootstrap peers
// waits for their answers before it calls itself ready (mesh.Node.Ready).
//
// The protocol is a libp2p stream protocol, SummaryProtocol:
//
//	/meshcdn/<name>/summary/1
//
// The asking peer opens a stream, writes the request, closes its write side
// and reads the answer until the stream ends. The answering peer reads the
// request, writes the answer and closes the stream. Either side resets the
// stream on anything else, and after 10 s (DefaultSummaryTimeout) in all.
// A peer answers at most 16 requests at once (DefaultSummaryConcurrency);
// beyond that it resets the stream.
//
// The request is exactly two bytes:
//
//	offset  size  field
//	0       1     version: 0x01. The answering peer resets the stream on any
//	              other value.
//	1       1     flags. Bit 0 (0x01): also list other holders (a peer asks
//	              this of its bootstrap peers, the mesh's seeds). Other bits
//	              are sent as 0 and ignored.
//
// The answer is at most 1 MiB (MaxSummarySize); the asking peer stops
// reading past that and drops the answer:
//
//	offset  size  field
//	0       1     version: 0x01. Any other value: drop the answer.
//	1       2     ttl: unsigned 16-bit big-endian, seconds, 1..65535: how
//	              long the asker may believe the answer (180 by default).
//	3       ...   groups, up to the end of the stream (possibly none):
//	                1 byte   P, the length of the holder's peer ID, 0..64.
//	                         0 means the answering peer itself: that group,
//	                         if present, comes first.
//	                P bytes  the holder's binary peer ID (the multihash of
//	                         a /p2p/ address component).
//	                1 byte   A, the number of addresses, 0..8; 0 when P is 0.
//	                A times:
//	                  2 bytes  unsigned big-endian length M, 1..1024
//	                  M bytes  a binary multiaddr where the holder may be
//	                           dialled (without /p2p/<holder>)
//	                2 bytes  unsigned 16-bit big-endian count N of roots,
//	                         at least 1
//	                N times: 1 byte length L (1..64) and L bytes of a binary
//	                         CIDv1 with a sha2-256 multihash, as in the
//	                         announce message
//
// A holder other than the answering peer appears at most once and at most
// 64 of them (MaxSummaryHolders) appear; each is a peer the answering peer's
// provider table lists (seeds only: other peers answer with their own group
// alone), the most recently heard first, with the addresses the answering
// peer knows for it. The asker drops, whole, an answer that is too long or
// truncated, has a peer ID that does not parse, an own group that is not
// first, a holder listed twice, more than 64 holders, a group with 0 roots,
// a length out of range, or a root that is not a CIDv1 of a sha2-256
// multihash. A root repeated within a group counts once. What does not fit
// in 1 MiB is left out by the sender, its own roots first (about 28,000
// roots fit).
//
// Example (ExampleEncodeSummary): the request "others too", 2 bytes,
//
//	01 01
//
// and an answer, ttl 180 s, from a peer holding the raw root of "hello\n",
// listing one other holder, 12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp
// at /ip4/127.0.0.1/tcp/4001, of the dag-pb root of the example above, 133
// bytes:
//
//	01 00b4
//	00 00 0001
//	24 01 55 1220 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
//	26 0024080112204cb5abf6ad79fbf5abbccafcc269d85cd2651ed4b885b5869f241aedf0a5ba29
//	01 0008 047f000001060fa1
//	0001
//	24 01 70 1220 e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317
//
// What the asker does with an answer: it records (answering peer, root) for
// each own root, for ttl, as if from a HAVE; gossip then refreshes or drops
// the entries as usual. It records the other holders' entries, and their
// addresses, only from its bootstrap peers, which it trusts as it trusts its
// configuration; a browser client asks its seeds the same way. In
// JavaScript (it-length-prefixed is not used: the stream's bytes are the
// message):
//
//	const stream = await libp2p.dialProtocol(seed, `/meshcdn/${name}/summary/1`)
//	await stream.sink([Uint8Array.of(1, 1)])
//	const data = concat(await all(stream.source)) // Uint8ArrayList chunks
//	if (data.length > 1 << 20 || data[0] !== 1) return
//	const v = new DataView(data.buffer, data.byteOffset, data.byteLength)
//	const ttl = v.getUint16(1); let off = 3
//	while (off < data.length) {
//	  const p = data[off]; const id = p ? peerIdFromBytes(data.subarray(off + 1, off + 1 + p)) : seed
//	  off += 1 + p
//	  const addrs = []; let a = data[off++]
//	  while (a-- > 0) { const m = v.getUint16(off); addrs.push(multiaddr(data.subarray(off + 2, off + 2 + m))); off += 2 + m }
//	  let n = v.getUint16(off); off += 2
//	  while (n-- > 0) { const l = data[off]; record(id, CID.decode(data.subarray(off + 1, off + 1 + l)), ttl); off += 1 + l }
//	}
//	// plus the checks above
//
// # Validation
//
// A gossipsub topic validator runs before any message reaches the table or
// is forwarded: unsigned (no signature or no author) is rejected (and
// wrongly signed ones never reach it: gossipsub rejects them first), more
// than MaxMessageSize bytes is rejected, malformed is rejected, an unknown
// version is ignored, and an author sending more than PeerBurst messages at
// once or PeerRate per second on average (64 and 4/s) is ignored.
// "Rejected" counts against the forwarding peer in gossipsub's peer score;
// "ignored" does not. The Table caps entries overall (100,000) and per peer
// (10,000), and a TTL at TableConfig.MaxTTL (10 min: the protocol's own TTL
// is 3 min). Keys are free, so an author's rate limit means little against
// sybils: the Table therefore ranks providers by evidence
// (TableConfig.Evidence; mesh rates a peer that delivered verified bytes
// over a bootstrap/seed peer over a connected peer over an unknown key).
// When full it evicts the least recently refreshed entry of an unknown key,
// and an entry of a peer with evidence only when no unknown one is left;
// Providers lists peers with more evidence first, then by expiry. A flood of
// HAVEs from unknown keys can neither evict the seed's entries nor push it
// out of the first providers of a root (the wire format is unchanged).
//
// # Replay
//
// A signed message stays valid forever: anyone who captured one (any peer of
// the mesh receives them all) can send it again later, to anyone, and
// gossipsub's seen-message cache forgets a message after 2 minutes. A replayed
// HAVE of content its author has since dropped, or FETCH of a fetch it has
// since abandoned, would list the author for content it does not have (a
// striping peer would wait on it and blame it); a replayed DROP would hide a
// holder. So the validator also ignores (Stats.Replayed) a message whose
// gossipsub sequence number it has already accepted from that author, or has
// passed by more than 64, or that is more than 2 older than the first it saw
// from that author (pubsub validates messages concurrently, so an author's
// first two can be checked in either order). Both go-libp2p-pubsub and
// @libp2p/gossipsub (the browser's) count the sequence number up per author
// from the author's start time in nanoseconds, so a new message always carries
// a new, higher number, also after the author restarts; the 64 below the
// highest are still accepted once each, for messages that overtook each other
// on different paths. The sequence number is inside the signed envelope: it
// cannot be changed without the author's key. The Table then orders what
// passes: a message older than the one that last set an entry changes nothing
// (see Semantics).
//
// The validator remembers 16,384 authors (about 100 bytes each). When full
// it forgets the author without evidence (TableConfig.Evidence) it heard
// from least recently, and one with evidence only when none other is left:
// a flood of new keys cannot make it forget the seed or connected peers.
// What is not covered: a node that restarts, or that was made to forget an
// author by such a flood, accepts as that author's first message one
// replay of a message it had not seen, until the author's next message
// (with a higher number) supersedes it at the entries it names, and at
// most for its TTL (capped by TableConfig.MaxTTL). An author whose clock
// went back between two runs (its numbers start below the ones a peer
// remembers) is ignored by that peer until the peer forgets it or
// restarts.
//
// # DHT
//
// Held roots are provided to the mesh's DHT when they arrive, all of them at
// start and every ReprovideInterval (12 h), one provide at a time; a failed
// provide (typically: no DHT peer yet) is retried after 1 s, doubling up to
// 5 min, if the content is still held then. boxo's
// provider.System was considered and not used: its Close does not wait for
// its provide workers (our Close must), it logs through go-log's global
// logger rather than an injected slog.Logger, and its persistent queue adds
// nothing when the store can list what it holds. A DROP cannot retract a
// provider record: it expires (48 h in go-libp2p-kad-dht), and a fetcher
// that asks a peer that no longer holds the content gets DONT_HAVE. The
// table asks the DHT only when gossip knows no provider of a root, and keeps
// what it finds for TableConfig.DHTTTL (10 min).
//
// Provider records that others store here are bounded (DHTOptions): at most
// MaxProviderRecordsPerPeer (10,000) of one provider and MaxProviderRecords
// (100,000, about 25 MiB) in all, the provider holding the most giving way
// when full. go-libp2p-kad-dht v0.42 kept every ADD_PROVIDER for 48 h
// without a cap (one connection took a seed's heap past 1 GiB) and takes no
// custom ProviderStore: the bound is its provider datastore. Its provider
// manager still buffers up to 320 records and caches 256 keys.
//
// # LAN
//
// With Config.MDNS On (the default) go-libp2p's mDNS finds the mesh's peers
// on the LAN and the Announcer connects to them; gossipsub and the
// re-announcement on join then fill the tables within tens of milliseconds.
// mDNS multicasts on every interface, so tests turn it off.
//
// # Measured
//
// All on this project's 2-core machine, shared with other work, so figures
// vary between runs; ranges are over three runs.
//
// Convergence, 30 peers (ring plus three random links each, mean degree about
// 8, gossipsub mesh formed), one peer imports 1 KiB, time until the 29 others'
// tables list it, 20 trials, origin rotating:
//
//	go test -run '^$' -bench Convergence30 -benchtime 1x ./announce/
//
//	                          median        p95
//	mocknet, no latency       1.9-8.0 ms    2.3-29 ms
//	mocknet, 5 ms per link    18.6-19.3 ms  19.4-43 ms
//	real hosts, TCP 127.0.0.1 2.5-3.5 ms    4.4-5.3 ms
//
// The target, p95 under 250 ms, holds with room to spare. Flood publishing
// (PubSubOptions) sends a peer's own message to all its neighbours at once;
// without it a message can wait for a heartbeat. A message published before
// a peer's gossipsub mesh has formed (just after connecting) is not
// forwarded beyond the first hop: the summary on join repairs it for
// neighbours, the periodic summary for peers further away.
//
// Traffic, real hosts (Ed25519 keys; on mocknet's ECDSA keys every message
// also carries a 91-byte public key):
//
//	go test -run '^$' -bench 'Convergence30|Traffic30' -benchtime 1x ./announce/
//
// gave:
//
//   - A HAVE of one root costs each of the 30 peers about 1.07 KB sent and as
//     much received (1058-1083 B): a 43-byte payload in a ~200-byte signed
//     envelope, which each peer receives about 5.5 times (gossipsub's mesh
//     degree D = 6, plus the flood publish).
//   - Summaries: with 20 roots per peer and a summary every 2 s, 77.8-79.0
//     KB/s per peer each way; with nothing to announce, 0 (heartbeats carry
//     no control messages in a settled mesh). At the default SummaryInterval
//     of 1 min that is 2.6 KB/s per peer each way.
//
// So per peer and direction, roughly
//
//	bytes/s ≈ c × N × (156 + 37·R) / T  +  c × E × (156 + 6 + 37·r)
//
// with c ≈ 5.8 copies, N peers in the topic, R roots each, T the summary
// interval, E announcements (batches) per second in the whole mesh with r
// roots each. It grows linearly with the mesh: at 10,000 peers holding 20
// roots, summaries alone are about 870 KB/s per peer, and one import per peer
// per minute adds about 180 KB/s. Nothing in this package bounds that yet;
// what would:
//
//   - Gossip only where it pays: a topic per zone (office, campus, city
//     cell: /meshcdn/<name>/announce/1/<zone>) of at most a few hundred
//     peers, and the DHT, whose cost per provide or lookup grows with
//     log N, for the rest. Per-peer traffic then depends on the zone's size,
//     not the mesh's: 200 peers, 20 roots, T = 5 min is about 3.5 KB/s.
//   - A byte budget per peer: stretch T as the number of authors grows (TTL
//     with it, up to the 18 h the 16-bit field allows), and suppress a HAVE
//     of a root that k peers of the zone announced within its TTL (like
//     mDNS's known-answer suppression), so a popular asset costs k
//     announcements, not N.
//   - A compact summary (a Bloom filter at about 1.25 bytes per root for 1 %
//     false positives, against 37) as a version 3 message: a false positive
//     costs a fetcher one DONT_HAVE.
//   - Summaries from long-lived peers (seeds, desktop apps) only; browsers
//     send HAVE and DROP for changes.
//
// Receivers already cap what one author can make them accept: PeerRate ×
// MaxMessageSize, 64 KiB/s.
//
// DHT fallback, gossip disabled between two peers, 5 DHT peers on mocknet,
// routing tables filled, 5 rounds:
//
//	go test -race -run TestDHTFallback -v ./announce/
//
// B's import and provide take a median of 3-6 ms without link latency and
// 15-35 ms with 5 ms per link; A's table, knowing nothing by gossip, finds B
// through the DHT in a median of 0.1-0.15 ms and 11-13 ms. A provide
// attempted before the routing table has any peer fails and is retried after
// 1 s (doubling to 5 min).
//
// Table: 292 bytes per entry, 28 MiB for the default 100,000 entries, a
// sweep of all of them 1.8 ms (go test -run '^$' -bench TableMemory
// -benchtime 1x ./announce/).
//
// mDNS: inside a network namespace with only loopback (see TestMDNSInNetns
// for the command), two unconnected peers found each other and the content
// in 16-31 ms.
package announce
