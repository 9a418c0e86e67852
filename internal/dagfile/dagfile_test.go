package dagfile_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

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
