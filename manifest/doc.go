// Package manifest reads, checks and builds meshcdn manifests: the list of a
// site's assets with their CIDs, sizes and content types, and the inner DAG
// nodes that let a client check every byte it fetches.
//
// The origin publishes a manifest (built at deploy time with
// `go run ./examples/manifest DIR`, which writes DIR/manifest.json); clients
// fetch it over HTTPS and trust it as they trust the origin. Kiosk seeds pin
// everything a manifest lists. A manifest never lists itself: FromDir takes
// the paths to leave out, and examples/manifest leaves out its own output
// and any earlier manifest in DIR.
//
// A site is a sequence of manifests published at one URL. A node following
// the site (mesh.Node.Follow) fetches it again now and then with
// If-None-Match, and swaps to a new version only once it parsed and
// checked in full; the paths and CIDs of the old version stay valid for
// fetches already under way.
//
// # Format, version 1
//
// A manifest is one JSON object (UTF-8, at most 64 MiB):
//
//	{
//	  "version": 1,
//	  "profile": "unixfs-v1-2025",
//	  "assets": [
//	    {
//	      "path": "img/logo.png",
//	      "cid": "bafkreib...",
//	      "size": 48213,
//	      "type": "image/png"
//	    },
//	    {
//	      "path": "video/intro.mp4",
//	      "cid": "bafybei...",
//	      "size": 52428800,
//	      "type": "video/mp4",
//	      "nodes": ["EioKJAFVEiD...", "..."]
//	    }
//	  ],
//	  "seeds": [
//	    "/dns4/seed1.example.com/tcp/4001/p2p/12D3KooW...",
//	    "/dns4/seed1.example.com/udp/4001/quic-v1/webtransport/certhash/.../p2p/12D3KooW..."
//	  ]
//	}
//
// Fields, all required but "nodes" and "seeds"; a reader refuses unknown
// fields, a name in another case ("Path"), a field given twice in one
// object, and a document that is not UTF-8. Parse checks each asset as it
// reads it, so a bad one is refused before the rest is decoded:
//
//   - version: the integer 1. A reader refuses any other version.
//   - profile: "unixfs-v1-2025", the import parameters of every CID: CIDv1,
//     sha2-256, raw leaves, 1 MiB (1,048,576-byte) chunks, balanced layout,
//     at most 1024 links per node (IPIP-499). The same bytes get the same CID
//     in meshcdn, in Kubo (`ipfs add --profile unixfs-v1-2025`) and in Helia.
//   - assets: the files, in any order (the builder sorts them by path).
//   - path: relative, slash-separated, with no empty, "." or ".." segment,
//     no leading slash, no backslash, no control character, at most 1024
//     bytes of UTF-8. Unique within the manifest. It is the file's name,
//     not a URL: the origin serves it at BASE/PATH with each segment
//     percent-escaped (a file "img/100% off.png" at "img/100%25%20off.png").
//   - cid: the file's root as a CIDv1 string (base32 by convention). A file
//     of at most 1 MiB is a single raw leaf (codec raw, 0x55): its CID is the
//     hash of the plain bytes. A larger file's root is a dag-pb node (0x70).
//   - size: the file's size in bytes, 0 or more.
//   - type: the Content-Type to serve, with parameters if any
//     ("text/html; charset=utf-8").
//   - nodes: for a dag-pb root, every inner dag-pb node of the file, each as
//     standard base64 (RFC 4648, with padding) of the node's bytes, the root
//     first, then in depth-first order. Files up to 1 GiB have only the
//     root; above 1 GiB the root links to intermediate nodes. Absent for a
//     raw root.
//   - seeds: optional, added within version 1: multiaddrs of the site's
//     seeds, each a string that starts with "/" and ends in /p2p/ID (at
//     most 64 entries of at most 1024 bytes, no spaces or control
//     characters). A reader uses them as bootstrap peers: it dials them,
//     keeps them connected, and follows changes to the list when a new
//     version of the manifest arrives. It skips, without failing, an entry
//     it cannot parse or has no transport for (a browser skips plain /tcp;
//     a Go node skips /webrtc-direct if it lacks it), and never trusts a
//     seed's content more than any peer's: every block is still checked
//     against its CID. Absent or empty: no seeds are named, and peers are
//     found as before (configured bootstrap peers, mDNS, the DHT). A
//     manifest without seeds is exactly a manifest of before; Go readers
//     from before the field was added refuse a manifest that has it
//     (unknown field), the browser client ignores it.
//
// A reader checks the inner nodes before trusting them: each node's CID is
// computed from its bytes (CIDv1, dag-pb, sha2-256), the first must be the
// asset's cid, a walk from the root through the nodes must reach every node
// given, and the leaves it finds must add up to size. The walk yields each
// leaf's CID and byte range: leaf i holds bytes [i MiB, (i+1) MiB) of the
// plain file (the last may be shorter). A client that has the manifest can
// therefore fetch any leaf from a plain HTTP origin with a Range request and
// check it by hashing it, with nothing else from the origin.
//
// Size: the inner nodes cost about 48 bytes per MiB of file (about 64 as
// base64): a 1 GiB video adds about 64 KiB to the manifest.
package manifest
