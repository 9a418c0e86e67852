package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/meshcdn/meshcdn/internal/dagfile"
)

// Content is the result of an import.
type Content struct {
	Root cid.Cid
	// Size is the file's size in bytes.
	Size int64
}

// ImportOptions tune Import.
type ImportOptions struct {
	// Pin pins the imported content: it is never evicted, and an import
	// that cannot fit beside the pinned content fails with ErrQuotaExceeded.
	Pin bool
}

// Import reads r to its end and stores it as a UnixFS file with the
// unixfs-v1-2025 profile: CIDv1, sha2-256, raw leaves, 1 MiB chunks, 1024
// links per node. Kubo (`ipfs add --profile unixfs-v1-2025`, or
// `--cid-version=1 --raw-leaves --chunker=size-1048576 --max-file-links=1024`)
// and Helia give the same CID for the same bytes.
//
// The import lands whole or not at all: if r fails, ctx ends or the quota
// cannot make room, the blocks it wrote are deleted and the error says why
// (errors.Is(err, ErrQuotaExceeded) for the quota).
func (s *Store) Import(ctx context.Context, r io.Reader, opts ImportOptions) (Content, error) {
	if r == nil {
		return Content{}, errors.New("store: import: nil reader")
	}
	t := s.Begin()
	defer t.Discard()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := newPipeWriter(ctx, t)
	nd, err := dagfile.Import(ctx, r, w)
	if werr := w.flush(); err == nil {
		err = werr
	}
	if err != nil {
		return Content{}, fmt.Errorf("store: import: %w", err)
	}
	size, err := nodeFileSize(nd)
	if err != nil {
		return Content{}, fmt.Errorf("store: import: %w", err)
	}
	if err := t.Commit(ctx, nd.Cid(), opts.Pin); err != nil {
		return Content{}, fmt.Errorf("store: import: %w", err)
	}
	return Content{Root: nd.Cid(), Size: size}, nil
}

func nodeFileSize(nd ipld.Node) (int64, error) {
	switch n := nd.(type) {
	case *merkledag.ProtoNode:
		fsn, err := unixfs.FSNodeFromBytes(n.Data())
		if err != nil {
			return 0, err
		}
		return int64(fsn.FileSize()), nil
	default:
		return int64(len(nd.RawData())), nil
	}
}

// pipeWriter lets boxo's importer write through a Txn while it hashes the
// next chunk: blocks go to pipeWriters writer goroutines through a short
// queue (pipeDepth blocks, so about that many MiB in flight); several writers
// let badger commit their writes together. Blocks the importer made are
// hashed by the importer itself, so they are stored without hashing them
// again. The first write error stops the import: the next Add returns it.
type pipeWriter struct {
	t   *Txn
	ch  chan ipld.Node
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error
}

const (
	pipeDepth   = 4
	pipeWriters = 2
)

func newPipeWriter(ctx context.Context, t *Txn) *pipeWriter {
	w := &pipeWriter{t: t, ch: make(chan ipld.Node, pipeDepth)}
	w.wg.Add(pipeWriters)
	for range pipeWriters {
		go w.write(ctx)
	}
	return w
}

// write stores queued blocks until the queue closes.
func (w *pipeWriter) write(ctx context.Context) {
	defer w.wg.Done()
	for n := range w.ch {
		if w.failed() != nil {
			continue // drain
		}
		if err := w.t.s.put(ctx, n, w.t); err != nil {
			w.mu.Lock()
			if w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
		}
	}
}

func (w *pipeWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// flush waits for every queued write and returns the first error.
func (w *pipeWriter) flush() error {
	close(w.ch)
	w.wg.Wait()
	return w.failed()
}

func (w *pipeWriter) Add(ctx context.Context, n ipld.Node) error {
	if err := w.failed(); err != nil {
		return err
	}
	select {
	case w.ch <- n:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *pipeWriter) AddMany(ctx context.Context, ns []ipld.Node) error {
	for _, n := range ns {
		if err := w.Add(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// Get is not used by the balanced importer; it reads through the store.
func (w *pipeWriter) Get(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	b, err := w.t.s.Get(ctx, c)
	if err != nil {
		return nil, err
	}
	return ipld.Decode(b, merkledagDecoder)
}

func merkledagDecoder(b blocks.Block) (ipld.Node, error) {
	if b.Cid().Type() == cid.Raw {
		return merkledag.NewRawNodeWPrefix(b.RawData(), b.Cid().Prefix())
	}
	return merkledag.DecodeProtobufBlock(b)
}

func (w *pipeWriter) GetMany(ctx context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		n, err := w.Get(ctx, c)
		ch <- &ipld.NodeOption{Node: n, Err: err}
	}
	close(ch)
	return ch
}

func (w *pipeWriter) Remove(context.Context, cid.Cid) error {
	return errors.New("store: remove through an import is not supported")
}

func (w *pipeWriter) RemoveMany(context.Context, []cid.Cid) error {
	return errors.New("store: remove through an import is not supported")
}

// Leaf is one raw leaf of a file: its CID and the bytes of the plain file it
// holds, [Offset, Offset+Size). Under the unixfs-v1-2025 profile leaf i holds
// bytes [i MiB, (i+1) MiB), so a plain HTTP origin can serve any leaf with a
// Range request and the bytes can be checked against the leaf's CID.
type Leaf struct {
	Cid    cid.Cid
	Offset int64
	Size   int64
}

// BlockGetter reads blocks: a Store, a blockservice, or the inner nodes a
// manifest carries.
type BlockGetter interface {
	Get(ctx context.Context, c cid.Cid) (blocks.Block, error)
}

// Leaves lists the leaves of the file rooted at root, in file order, reading
// only its inner nodes from g (each checked against its CID). size is the
// file's size: it is the single leaf's size when root is a raw block, and a
// DAG that does not add up to it is refused with an error.
func Leaves(ctx context.Context, g BlockGetter, root cid.Cid, size int64) ([]Leaf, error) {
	var out []Leaf
	total, err := dagfile.Walk(ctx, g, root, size, nil, func(l dagfile.Leaf) error {
		out = append(out, Leaf(l))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: leaves of %s: %w", root, err)
	}
	if total != size {
		return nil, fmt.Errorf("store: leaves of %s: %w: holds %d bytes, want %d", root, dagfile.ErrNotFile, total, size)
	}
	return out, nil
}

// InnerNodes returns the inner (dag-pb) nodes of the file rooted at root, in
// the order a walk meets them, root first: what a client needs to know every
// leaf's CID. A raw root has none.
func InnerNodes(ctx context.Context, g BlockGetter, root cid.Cid) ([]blocks.Block, error) {
	if root.Type() == cid.Raw {
		return nil, nil
	}
	var out []blocks.Block
	_, err := dagfile.Walk(ctx, g, root, 0, func(b blocks.Block) error {
		out = append(out, b)
		return nil
	}, func(dagfile.Leaf) error { return nil })
	if err != nil {
		return nil, fmt.Errorf("store: inner nodes of %s: %w", root, err)
	}
	return out, nil
}
