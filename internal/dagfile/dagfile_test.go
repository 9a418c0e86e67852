package dagfile_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/meshcdn/meshcdn/internal/dagfile"
	"github.com/meshcdn/meshcdn/internal/testutil"
)

// mapDAG keeps every node an import makes.
type mapDAG map[string]ipld.Node

func (m mapDAG) Add(_ context.Context, n ipld.Node) error { m[n.Cid().KeyString()] = n; return nil }
func (m mapDAG) AddMany(ctx context.Context, ns []ipld.Node) error {
	for _, n := range ns {
		m.Add(ctx, n)
	}
	return nil
}
func (m mapDAG) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	if n, ok := m[c.KeyString()]; ok {
		return n, nil
	}
	return nil, ipld.ErrNotFound{Cid: c}
}
func (m mapDAG) GetMany(context.Context, []cid.Cid) <-chan *ipld.NodeOption { return nil }
func (m mapDAG) Remove(context.Context, cid.Cid) error                      { return nil }
func (m mapDAG) RemoveMany(context.Context, []cid.Cid) error                { return nil }

type blockGetter map[string]blocks.Block

func (g blockGetter) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	if b, ok := g[c.KeyString()]; ok {
		return b, nil
	}
	return nil, ipld.ErrNotFound{Cid: c}
}

func rootOf(t testing.TB, size int64) []byte {
	t.Helper()
	d := mapDAG{}
	nd, err := dagfile.Import(context.Background(), testutil.Reader(1, size), d)
	if err != nil {
		t.Fatal(err)
	}
	return nd.RawData()
}

func TestWalkRefusesTamperedNode(t *testing.T) {
	raw := rootOf(t, 3<<20)
	c, _ := dagfile.Prefix.Sum(raw)
	bad := append([]byte{}, raw...)
	bad[10] ^= 1
	b, _ := blocks.NewBlockWithCid(bad, c)
	_, err := dagfile.Walk(context.Background(), blockGetter{c.KeyString(): b}, c, 0, nil, func(dagfile.Leaf) error { return nil })
	var he *dagfile.HashError
	if !errors.As(err, &he) {
		t.Errorf("Walk over a tampered root = %v, want *HashError", err)
	}
}

func TestWalkRefusesForeignDAGs(t *testing.T) {
	// A dag-pb directory node, not a file.
	dir := merkledag.NodeWithData([]byte{0x08, 0x01})
	dir.SetCidBuilder(dagfile.Prefix)
	c := dir.Cid()
	_, err := dagfile.Walk(context.Background(), blockGetter{c.KeyString(): dir}, c, 0, nil, func(dagfile.Leaf) error { return nil })
	if !errors.Is(err, dagfile.ErrNotFile) {
		t.Errorf("Walk over a directory = %v, want ErrNotFile", err)
	}
}

// truncated is a raw CID of data with a sha2-256 digest cut to n bytes.
func truncated(t *testing.T, data []byte, n int) cid.Cid {
	t.Helper()
	h, err := mh.Sum(data, mh.SHA2_256, n)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// TestCheckRefusesTruncatedDigest: go-multihash checks bytes against a
// sha2-256 digest shorter than 32 bytes by truncating their hash, so
// that bytes for a 1-byte digest are forged in about 256 tries. Check
// accepts only the whole digest: neither the forgery nor the true bytes
// verify against such a CID.
func TestCheckRefusesTruncatedDigest(t *testing.T) {
	c := truncated(t, []byte("hello"), 1)
	var forged []byte
	for i := 0; forged == nil; i++ {
		b := fmt.Appendf(nil, "forged %d", i)
		if got, err := c.Prefix().Sum(b); err == nil && got.Equals(c) {
			forged = b
		}
	}
	for _, data := range [][]byte{forged, []byte("hello")} {
		if err := dagfile.CheckBytes(c, data); err == nil {
			t.Errorf("CheckBytes(%s, %q) = nil, want an error", c, data)
		}
	}
	if err := dagfile.CheckHash(c); err == nil {
		t.Errorf("CheckHash(%s) = nil, want an error", c)
	}
	full := truncated(t, []byte("hello"), -1)
	if err := dagfile.CheckBytes(full, []byte("hello")); err != nil {
		t.Errorf("CheckBytes with the whole digest = %v", err)
	}
}

// TestWalkRefusesTruncatedLinks: a file whose root, or a link of whose
// inner node, has a truncated digest is not a file Walk accepts: its
// leaves could be forged.
func TestWalkRefusesTruncatedLinks(t *testing.T) {
	ctx := context.Background()
	noLeaf := func(dagfile.Leaf) error { return nil }
	if _, err := dagfile.Walk(ctx, blockGetter{}, truncated(t, []byte("x"), 4), 1, nil, noLeaf); !errors.Is(err, dagfile.ErrNotFile) {
		t.Errorf("Walk of a raw root with a 4-byte digest = %v, want ErrNotFile", err)
	}
	nd, err := merkledag.DecodeProtobuf(rootOf(t, 3<<20))
	if err != nil {
		t.Fatal(err)
	}
	links := nd.Links()
	links[1] = &ipld.Link{Cid: truncated(t, []byte("a leaf"), 20), Size: links[1].Size}
	if err := nd.SetLinks(links); err != nil {
		t.Fatal(err)
	}
	nd.SetCidBuilder(dagfile.Prefix)
	var leaves int
	_, err = dagfile.Walk(ctx, blockGetter{nd.Cid().KeyString(): nd}, nd.Cid(), 0, nil, func(dagfile.Leaf) error { leaves++; return nil })
	if !errors.Is(err, dagfile.ErrNotFile) {
		t.Errorf("Walk of a node linking a 20-byte digest = %v, want ErrNotFile", err)
	}
	if leaves > 1 {
		t.Errorf("Walk gave %d leaves, want at most the one before the bad link", leaves)
	}
}
