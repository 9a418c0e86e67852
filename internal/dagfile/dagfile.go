// Package dagfile is meshcdn's one definition of content identity: how a file
// becomes a UnixFS DAG under the IPIP-499 unixfs-v1-2025 profile (CIDv1,
// sha2-256, raw leaves, 1 MiB chunks, 1024 links per node), and how a file
// root is walked back into its leaves and inner nodes.
//
// The profile's parameters are passed explicitly to boxo's balanced importer.
// boxo's UnixFSProfile.ApplyGlobals is never called: it changes process-wide
// globals that the embedding application may rely on.
package dagfile

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	chunk "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

const (
	// ChunkSize is the size of every leaf but the last: leaf i of a file holds
	// bytes [i*ChunkSize, (i+1)*ChunkSize) of the plain file.
	ChunkSize = 1 << 20
	// MaxLinks is the most links an inner node has.
	MaxLinks = 1024
	// MaxInnerNodeSize bounds the size of an encoded inner node: 1024 links
	// of about 48 bytes each plus the UnixFS data. Larger dag-pb blocks are
	// not of this profile and are refused when walking.
	MaxInnerNodeSize = 128 << 10
	// maxDepth bounds recursion when walking a DAG: depth 3 already covers
	// 1 MiB * 1024^3 = 1 PiB.
	maxDepth = 8
)

// Prefix is the CID prefix of inner (dag-pb) nodes; leaves use the same
// prefix with the raw codec.
var Prefix = cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}

// ErrNotFile reports a root that is not a UnixFS file of this profile.
var ErrNotFile = errors.New("not a unixfs file")

// Import reads r to its end and adds the file's blocks to dserv, returning
// the root node. A cancelled ctx or a failing reader stops the import with
// that error; blocks already added stay in dserv for the caller to undo.
func Import(ctx context.Context, r io.Reader, dserv ipld.DAGService) (ipld.Node, error) {
	params := helpers.DagBuilderParams{
		Maxlinks:   MaxLinks,
		RawLeaves:  true,
		CidBuilder: Prefix,
		Dagserv:    ctxDAG{ctx: ctx, DAGService: dserv},
	}
	db, err := params.New(chunk.NewSizeSplitter(ctxReader{ctx: ctx, r: r}, ChunkSize))
	if err != nil {
		return nil, err
	}
	return balanced.Layout(db)
}

// ctxReader stops a read once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ctxDAG hands the import's ctx to the DAGService; boxo's builder passes a
// background context.
type ctxDAG struct {
	ctx context.Context
	ipld.DAGService
}

func (c ctxDAG) Add(_ context.Context, n ipld.Node) error { return c.DAGService.Add(c.ctx, n) }

// Leaf is one raw leaf of a file: its CID and where its bytes sit in the file.
type Leaf struct {
	Cid    cid.Cid
	Offset int64
	Size   int64
}

// Getter reads blocks; a store, a blockservice or a map of inner nodes.
type Getter interface {
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
}

// Walk visits the file rooted at root in file order: inner nodes as they are
// entered (through inner) and leaves (through leaf), without reading any
// leaf's bytes. A raw root is a single-leaf file whose size is rawSize (the
// caller knows it, since leaves are never read here). The inner nodes are
// read from g and each is checked against its CID; a root or a link whose
// hash CheckHash refuses is ErrNotFile.
func Walk(ctx context.Context, g Getter, root cid.Cid, rawSize int64, inner func(blocks.Block) error, leaf func(Leaf) error) (int64, error) {
	if err := CheckHash(root); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNotFile, err)
	}
	if root.Type() == cid.Raw {
		if rawSize < 0 || rawSize > ChunkSize {
			return 0, fmt.Errorf("%w: raw root %s of size %d", ErrNotFile, root, rawSize)
		}
		return rawSize, leaf(Leaf{Cid: root, Size: rawSize})
	}
	var off int64
	err := walk(ctx, g, root, 0, &off, inner, leaf)
	return off, err
}

func walk(ctx context.Context, g Getter, c cid.Cid, depth int, off *int64, inner func(blocks.Block) error, leaf func(Leaf) error) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: deeper than %d levels at %s", ErrNotFile, maxDepth, c)
	}
	if c.Type() != cid.DagProtobuf {
		return fmt.Errorf("%w: inner node %s has codec %#x", ErrNotFile, c, c.Type())
	}
	b, err := g.Get(ctx, c)
	if err != nil {
		return err
	}
	if err := Check(b); err != nil {
		return err
	}
	if len(b.RawData()) > MaxInnerNodeSize {
		return fmt.Errorf("%w: inner node %s is %d bytes", ErrNotFile, c, len(b.RawData()))
	}
	nd, err := merkledag.DecodeProtobuf(b.RawData())
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotFile, c, err)
	}
	fsn, err := unixfs.FSNodeFromBytes(nd.Data())
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotFile, c, err)
	}
	if fsn.Type() != unixfs.TFile && fsn.Type() != unixfs.TRaw {
		return fmt.Errorf("%w: %s has unixfs type %v", ErrNotFile, c, fsn.Type())
	}
	links := nd.Links()
	if len(links) != fsn.NumChildren() || len(links) > MaxLinks {
		return fmt.Errorf("%w: %s has %d links and %d block sizes", ErrNotFile, c, len(links), fsn.NumChildren())
	}
	if len(fsn.Data()) > 0 {
		return fmt.Errorf("%w: %s carries inline data (not raw leaves)", ErrNotFile, c)
	}
	start := *off
	if inner != nil {
		if err := inner(b); err != nil {
			return err
		}
	}
	for i, l := range links {
		if err := CheckHash(l.Cid); err != nil {
			return fmt.Errorf("%w: %s links to %v", ErrNotFile, c, err)
		}
		size := int64(fsn.BlockSize(i))
		switch l.Cid.Type() {
		case cid.Raw:
			if size > ChunkSize {
				return fmt.Errorf("%w: leaf %s of size %d", ErrNotFile, l.Cid, size)
			}
			if err := leaf(Leaf{Cid: l.Cid, Offset: *off, Size: size}); err != nil {
				return err
			}
			*off += size
		default:
			before := *off
			if err := walk(ctx, g, l.Cid, depth+1, off, inner, leaf); err != nil {
				return err
			}
			if *off-before != size {
				return fmt.Errorf("%w: %s says child %s holds %d bytes, it holds %d", ErrNotFile, c, l.Cid, size, *off-before)
			}
		}
	}
	if got := *off - start; uint64(got) != fsn.FileSize() {
		return fmt.Errorf("%w: %s says %d bytes, its leaves hold %d", ErrNotFile, c, fsn.FileSize(), got)
	}
	return nil
}

// HashError reports bytes that do not hash to the CID they were given for.
type HashError struct {
	Cid cid.Cid
}

func (e *HashError) Error() string {
	return fmt.Sprintf("block %s: bytes do not match its hash", e.Cid)
}

// CheckHash reports an error if c's hash is one Check does not accept:
// neither sha2-256 nor identity, so that no bytes could ever be verified
// against c, or a sha2-256 digest shorter than 32 bytes, which
// go-multihash checks by truncating the hash of the bytes to its length
// (a 4-byte digest takes about 2^32 tries to forge).
func CheckHash(c cid.Cid) error {
	p := c.Prefix()
	switch {
	case p.MhType == mh.SHA2_256 && p.MhLength != sha256.Size:
		return fmt.Errorf("block %s: sha2-256 digest of %d bytes, want %d", c, p.MhLength, sha256.Size)
	case p.MhType != mh.SHA2_256 && p.MhType != mh.IDENTITY:
		return fmt.Errorf("block %s: unsupported hash %#x", c, p.MhType)
	}
	return nil
}

// Check recomputes b's CID from its bytes and reports a *HashError if they
// differ. Only sha2-256 (32-byte digests) and identity CIDs of version 0
// or 1 are accepted (CheckHash).
func Check(b blocks.Block) error {
	return CheckBytes(b.Cid(), b.RawData())
}

// CheckBytes is Check on a CID and bytes.
func CheckBytes(c cid.Cid, data []byte) error {
	if err := CheckHash(c); err != nil {
		return err
	}
	p := c.Prefix()
	got, err := p.Sum(data)
	if err != nil {
		return fmt.Errorf("block %s: %w", c, err)
	}
	if !got.Equals(c) {
		return &HashError{Cid: c}
	}
	return nil
}

// Nodes holds a file's inner nodes by CID, for a walk (a Getter): the nodes a
// manifest carries, or those an import made.
type Nodes map[string]blocks.Block

// NewNodes indexes nodes by CID.
func NewNodes(nodes []blocks.Block) Nodes {
	m := make(Nodes, len(nodes))
	for _, b := range nodes {
		m[b.Cid().KeyString()] = b
	}
	return m
}

// Get returns the node with CID c, or ipld.ErrNotFound.
func (m Nodes) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	if b, ok := m[c.KeyString()]; ok {
		return b, nil
	}
	return nil, ipld.ErrNotFound{Cid: c}
}
