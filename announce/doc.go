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
// # Names
//
// A mesh has a name (ValidName: 1-63 of a-z, 0-9, '-'). From it derive
//
//	gossipsub topic      /meshcdn/<name>/announce/1        Topic
//	DHT protocol prefix  /meshcdn/<name>  (/meshcdn/<name>/kad/1.0.0)  ProtocolPrefix
//	mDNS service         _meshcdn-<name>._udp               MDNSService
//
// so two meshes never see each other's messages, records or LAN peers, and
// the public IPFS DHT (/ipfs/kad/1.0.0) is never joined by this package.
//
// # Wire format, version 1
//
// Every message is the data of one gossipsub message on the mesh's topic.
// The gossipsub envelope must be signed by the author's peer key (gossipsub's
// StrictSign, the default of both go-libp2p-pubsub and @libp2p/gossipsub):
// the author of the pubsub message is the peer the message speaks for.
// Messages without a signature are rejected. The data is:
//
//	offset  size  field
//	0       1     version: 0x01. Any other value: ignore the message (a
//	              newer format; do not penalise the sender).
//	1       1     kind: 0x01 HAVE (the author holds the roots), 0x02 DROP
//	              (it no longer holds them). Other values: reject.
//	2       2     ttl: unsigned 16-bit big-endian, seconds. HAVE: 1..65535,
//	              how long the receiver may believe it; the author announces
//	              again (or sends DROP) before it runs out. DROP: 0.
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
// bad kind, a HAVE with ttl 0, a DROP with ttl not 0, a length byte of 0 or
// above 64, or a root that is not a CIDv1 of a sha2-256 multihash. A root
// repeated within a message counts once. Varints inside CIDs must be minimal
// (as multiformats writes them), so a valid message has exactly one encoding.
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
// and a DROP of the first root, 43 bytes:
//
//	01 02 0000 0001
//	24 01 55 1220 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
//
// (spaces only for reading; the bytes are contiguous). ExampleEncode prints
// both.
//
// In JavaScript, with multiformats' CID (already a dependency of Helia):
//
//	const v = new DataView(data.buffer, data.byteOffset, data.byteLength)
//	if (data[0] !== 1) return // unknown version: ignore
//	const kind = data[1], ttl = v.getUint16(2), count = v.getUint16(4)
//	let off = 6; const roots = []
//	for (let i = 0; i < count; i++) {
//	  const len = data[off]
//	  roots.push(CID.decode(data.subarray(off + 1, off + 1 + len)))
//	  off += 1 + len
//	}
//	// plus the checks above: off === data.length, kind and ttl rules, ...
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
// of everything it holds) at start, every SummaryInterval (1 min, ±10%) and
// when peers join the topic (at most one every 500 ms), so that a late
// joiner or a peer that just connected learns the state without asking. TTL
// defaults to 3 × SummaryInterval, so a peer that leaves without a DROP is
// forgotten within three summaries.
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
// (10,000), evicting the least recently refreshed first, so a flood cannot
// grow it or push out everyone else's entries.
//
// # DHT
//
// Held roots are provided to the mesh's DHT when they arrive, all of them at
// start and every ReprovideInterval (12 h), one provide at a time. boxo's
// provider.System was considered and not used: its Close does not wait for
// its provide workers (our Close must), it logs through go-log's global
// logger rather than an injected slog.Logger, and its persistent queue adds
// nothing when the store can list what it holds. A DROP cannot retract a
// provider record: it expires (48 h in go-libp2p-kad-dht), and a fetcher
// that asks a peer that no longer holds the content gets DONT_HAVE. The
// table asks the DHT only when gossip knows no provider of a root, and keeps
// what it finds for TableConfig.DHTTTL (10 min).
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
// MEASURED-FIGURES
package announce
