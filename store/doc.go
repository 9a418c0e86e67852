// Package store keeps content-addressed blocks on disk within a byte quota.
//
// A Store is a boxo blockstore (bitswap and blockservice use it as it is)
// with three things added that a peer embedded in someone's desktop needs:
//
//   - A quota that is never exceeded, also under concurrent writers: room is
//     reserved before a block is written and released after it is deleted.
//   - Content as the unit of eviction: a root CID and the blocks of its DAG.
//     When room is needed, the least recently used unpinned content goes
//     whole (blocks it shares with other held content stay); blocks not yet
//     named as content (a fetch in progress) go first.
//   - Pins: pinned content is never evicted; an import that cannot fit beside
//     the pinned content fails with ErrQuotaExceeded and leaves nothing.
//
// Every block is checked against its CID when put and again when read by
// Get: corrupt bytes are reported as *CorruptError and never returned. A
// block served to another peer (GetForPeer), which checks what it receives,
// is checked more cheaply where the storage allows (badger's CRC32C of a
// value-log entry and its length) and hashed otherwise.
//
// # Failures
//
// A full disk is an error, never a crash. Badger writes through memory
// maps, where a full disk is SIGBUS; so the store keeps DiskMargin (72 MiB)
// free, refuses writes that would take it with ErrDiskFull and serves what
// it holds; opened on a disk below the margin it is read-only
// (Health().ReadOnly, ErrReadOnly).
//
// Damage costs what it must and no more. A block whose bytes fail their hash
// (or badger's CRC) is that block lost: its content stays held, pinned if it
// was, and incomplete (Incomplete, Holds false) until the block is put again,
// as a fetch does. Root records carry a checksum and pinned ones have a
// second copy in a pin file beside the database, so a damaged table cannot
// lose a pin. Blocks badger cuts from a damaged value log, or whose keys a
// damaged table lost, are read back from the value log directly. A database
// badger cannot open (a damaged MANIFEST or table index) is moved aside,
// never deleted; what verifies in it (read from its tables and logs) goes
// into a new one and the store starts (Health().MovedAside).
//
// Badger's logs go to Config.Logger, and nowhere without one. Close returns
// within seconds even when the directory was removed under the store.
//
// # Content identity
//
// Import turns bytes into a UnixFS file with the IPIP-499 unixfs-v1-2025
// profile: CIDv1, sha2-256, raw leaves, 1 MiB chunks, 1024 links per node.
// Kubo gives the same CIDs with `ipfs add --profile unixfs-v1-2025` or, on
// older repos, `--cid-version=1 --raw-leaves --chunker=size-1048576
// --max-file-links=1024`. Without the last flag Kubo uses 174 links per node
// and its CIDs differ for files above 174 MiB. The profile's parameters are
// passed to boxo's importer explicitly; boxo's UnixFSProfile.ApplyGlobals,
// which changes process-wide settings, is never called.
//
// Because leaves are fixed-size raw chunks, leaf i of a file is bytes
// [i MiB, (i+1) MiB) of the plain file: Leaves lists them with their offsets,
// so a missing leaf can be fetched from a plain HTTP origin with a Range
// request and checked against its CID.
package store
